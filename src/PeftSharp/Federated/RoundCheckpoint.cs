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

    /// <summary>Writes <c>round-N/</c> under <paramref name="outputDir"/> (a temporary folder renamed into place) and returns its path.</summary>
    public static string Save(string outputDir, int round, LoraModel lora, string adapter, string? baseModel, string roundJson)
    {
        string target = Path.Combine(outputDir, $"{Prefix}{round}");
        AtomicDirectory.Write(target, dir =>
        {
            AdapterFiles.Save(lora, dir, adapter, baseModel);
            File.WriteAllText(Path.Combine(dir, InfoFile), roundJson);
        });
        return target;
    }
}
