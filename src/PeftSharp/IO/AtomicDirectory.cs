using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace PeftSharp.IO;

/// <summary>
/// Creates a folder so that it appears complete or not at all: fill a temporary folder beside the target, flush
/// every file and the folder to disk, then rename it to the target (a rename within one folder is atomic). A crash
/// while writing leaves only a temporary folder (named <c>&lt;target&gt;.tmp-…</c>), which readers ignore and
/// <see cref="DeleteStale"/> removes later; whatever was there before stays intact.
/// </summary>
public static class AtomicDirectory
{
    const string TempMarker = ".tmp-", OldMarker = ".old-";

    /// <summary>
    /// Like <see cref="Write"/>, for folders a command creates from scratch: refuses a target that exists and is not
    /// empty, so nothing a user made is overwritten. <paramref name="flag"/> names the option in the message.
    /// </summary>
    public static void CreateNew(string target, Action<string> fill, string flag = "--out")
    {
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new PeftSharpException($"{flag} {target}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        if (Directory.Exists(target)) Directory.Delete(target);
        Write(target, fill);
    }

    /// <summary>
    /// Calls <paramref name="fill"/> with a new temporary folder beside <paramref name="target"/>, flushes it to disk and renames it to <paramref name="target"/>; an existing target is replaced only after the new folder is complete. If <paramref name="fill"/> throws, the temporary folder is deleted and the target is untouched.
    /// </summary>
    public static void Write(string target, Action<string> fill)
    {
        target = Path.GetFullPath(target);
        string parent = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(parent);
        string suffix = RandomNumberGenerator.GetHexString(12, lowercase: true);
        string temporary = target + TempMarker + suffix;
        Directory.CreateDirectory(temporary);
        try
        {
            fill(temporary);
            foreach (var file in Directory.EnumerateFiles(temporary, "*", SearchOption.AllDirectories)) FlushFile(file);
            FlushDirectory(temporary);
            if (Directory.Exists(target))
            {
                // Re-saving the same folder: move the old one aside first, since a folder cannot be renamed over another.
                string old = target + OldMarker + suffix;
                Directory.Move(target, old);
                Directory.Move(temporary, target);
                Directory.Delete(old, recursive: true);
            }
            else Directory.Move(temporary, target);
            FlushDirectory(parent);
        }
        catch
        {
            TryDelete(temporary);
            throw;
        }
    }

    /// <summary>True for names this class uses for unfinished folders.</summary>
    public static bool IsTemporaryName(string name) => name.Contains(TempMarker, StringComparison.Ordinal) || name.Contains(OldMarker, StringComparison.Ordinal);

    /// <summary>Deletes temporary folders left in <paramref name="parent"/> by crashed writes of folders named <paramref name="prefix"/>….</summary>
    public static void DeleteStale(string parent, string prefix)
    {
        if (!Directory.Exists(parent)) return;
        foreach (var dir in Directory.EnumerateDirectories(parent, prefix + "*"))
            if (IsTemporaryName(Path.GetFileName(dir))) TryDelete(dir);
    }

    static void FlushFile(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        stream.Flush(flushToDisk: true);
    }

    // .NET cannot fsync a folder; on Unix, open(2) + fsync(2) make the folder's entries (the new names) durable.
    static void FlushDirectory(string path)
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
        try
        {
            int fd = Native.open(path, 0 /* O_RDONLY */);
            if (fd < 0) return;
            Native.fsync(fd);
            Native.close(fd);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Best effort: without libc the rename is still atomic, only its durability is up to the file system.
        }
    }

    static void TryDelete(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    static class Native
    {
        [DllImport("libc", SetLastError = true)]
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);
        [DllImport("libc", SetLastError = true)]
        public static extern int fsync(int fd);
        [DllImport("libc")]
        public static extern int close(int fd);
    }
}
