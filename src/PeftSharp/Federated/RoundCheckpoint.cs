using System.Globalization;
using PeftSharp.IO;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Federated;

/// <summary>A round's global adapter on disk: <c>round-N/</c> in PEFT's format plus <c>round.json</c>, written atomically.</summary>
public static class RoundCheckpoint
{
    /// <summary>Folder name prefix of a round's checkpoint (<c>round-N</c>).</summary>
    public const string Prefix = "round-";
    /// <summary>File in each round folder describing the round (JSON).</summary>
    public const string InfoFile = "round.json";

    /// <summary>
    /// Writes <c>round-N/</c> under <paramref name="outputDir"/> (a temporary folder renamed into place) and returns its path.
    /// <paramref name="alsoWrite"/> may add files to the folder before it is renamed (the clients' uploads).
    /// </summary>
    public static string Save(string outputDir, int round, LoraModel lora, string adapter, string? baseModel, string roundJson, Action<string>? alsoWrite = null)
    {
        string target = Path.Combine(outputDir, $"{Prefix}{round}");
        AtomicDirectory.Write(target, dir =>
        {
            AdapterFiles.Save(lora, dir, adapter, baseModel);
            alsoWrite?.Invoke(dir);
            File.WriteAllText(Path.Combine(dir, InfoFile), roundJson);
        });
        return target;
    }

    /// <summary>The last complete checkpoint under <paramref name="outputDir"/> (highest N with <c>round.json</c>), or null.</summary>
    public static (int Round, string Dir)? Latest(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return null;
        (int, string)? best = null;
        foreach (var dir in Directory.EnumerateDirectories(outputDir, Prefix + "*"))
        {
            string name = Path.GetFileName(dir);
            if (AtomicDirectory.IsTemporaryName(name)) continue;
            if (!int.TryParse(name[Prefix.Length..], NumberStyles.None, CultureInfo.InvariantCulture, out int n)) continue;
            if (!File.Exists(Path.Combine(dir, InfoFile))) continue;
            if (best is null || n > best.Value.Item1) best = (n, dir);
        }
        return best;
    }
}
