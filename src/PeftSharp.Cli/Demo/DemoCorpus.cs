using System.Reflection;

namespace PeftSharp.Cli.Demo;

/// <summary>
/// Tiny Shakespeare (public domain, ~1.1 MB), shipped inside the tool. The base model learns from the first 85%;
/// the last 10% is held out. Two distinct tasks give the LoRA adapters something to learn that the base cannot do:
/// "shout" writes in UPPERCASE (seen by the base only in speaker names), "whisper" writes the held-out plays in lowercase.
/// </summary>
public sealed class DemoCorpus
{
    public required string BaseTrain { get; init; }
    public required string BaseValidation { get; init; }
    public required string HeldOutTrain { get; init; }
    public required string HeldOutValidation { get; init; }
    public required string WhisperTrain { get; init; }
    public required string WhisperValidation { get; init; }
    public required string ShoutTrain { get; init; }
    public required string ShoutValidation { get; init; }

    public static string ReadText()
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("tinyshakespeare.txt")
            ?? throw new InvalidOperationException("the demo corpus is missing from the build");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    public static DemoCorpus Load()
    {
        string text = ReadText().Replace("\r\n", "\n");
        string Slice(double from, double to) => Snap(text, (int)(from * text.Length), (int)(to * text.Length));
        string shout = Slice(0.85, 0.90);
        var heldOutTrain = Slice(0.90, 0.98);
        var heldOutValidation = Slice(0.98, 1.0);
        return new DemoCorpus
        {
            WhisperTrain = heldOutTrain.ToLowerInvariant(),
            WhisperValidation = heldOutValidation.ToLowerInvariant(),
            BaseTrain = Slice(0.0, 0.85),
            BaseValidation = Slice(0.85, 0.90),
            HeldOutTrain = heldOutTrain,
            HeldOutValidation = heldOutValidation,
            ShoutTrain = shout[..(shout.Length * 4 / 5)].ToUpperInvariant(),
            ShoutValidation = shout[(shout.Length * 4 / 5)..].ToUpperInvariant(),
        };
    }

    /// <summary>A slice cut at blank lines (between speeches), so no piece starts mid-word.</summary>
    static string Snap(string text, int from, int to)
    {
        int Align(int i) => i <= 0 ? 0 : i >= text.Length ? text.Length : Math.Max(0, text.IndexOf("\n\n", i, StringComparison.Ordinal) is int j && j >= 0 ? j + 2 : text.Length);
        int a = Align(from), b = Align(to);
        return text[a..b];
    }
}
