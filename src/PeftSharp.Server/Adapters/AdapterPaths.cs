namespace PeftSharp.Server.Adapters;

/// <summary>
/// Confines adapter paths to one folder: a path is accepted only when it has no ".." segment and its real location,
/// with every symbolic link on the way resolved, lies inside the folder's real location. The files the loader opens
/// (adapter_config.json, adapter_model.safetensors) are checked the same way, so a link inside the folder cannot
/// point out of it either.
/// </summary>
public sealed class AdapterPaths(string root)
{
    public string Root { get; } = RealPath(root);

    static readonly string[] LoaderFiles = ["adapter_config.json", "adapter_model.safetensors"];

    /// <summary>The real folder for <paramref name="path"/> (relative to the root, or absolute), or null when it escapes.</summary>
    public string? Resolve(string path)
    {
        if (path.Length == 0 || path.Contains('\0')) return null;
        if (path.Split('/', '\\').Any(s => s == "..")) return null;
        string real = RealPath(Path.IsPathRooted(path) ? path : Path.Combine(Root, path));
        if (!Inside(real)) return null;
        foreach (var file in LoaderFiles)
        {
            string f = Path.Combine(real, file);
            if (File.Exists(f) && !Inside(RealPath(f))) return null;
        }
        return real;
    }

    bool Inside(string real) =>
        real == Root || real.StartsWith(Root.EndsWith(Path.DirectorySeparatorChar) ? Root : Root + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>The absolute path with every symbolic link resolved (as POSIX realpath; missing parts are kept as written).</summary>
    public static string RealPath(string path)
    {
        string full = Path.GetFullPath(path);
        for (int hops = 0; hops < 40; hops++)
        {
            string root = Path.GetPathRoot(full)!;
            var parts = full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
            string current = root;
            string? relinked = null;
            for (int i = 0; i < parts.Length; i++)
            {
                string next = Path.Combine(current, parts[i]);
                FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
                if (info.Exists && info.LinkTarget is string target)
                {
                    string resolved = Path.GetFullPath(target, current);
                    relinked = Path.Combine([resolved, .. parts[(i + 1)..]]);
                    break;
                }
                current = next;
            }
            if (relinked is null) return current;
            full = Path.GetFullPath(relinked);
        }
        throw new PeftSharpException($"{path}: too many levels of symbolic links");
    }
}
