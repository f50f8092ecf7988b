using System.CommandLine;
using PeftSharp.Data;

namespace PeftSharp.Cli.Commands.Data;

/// <summary><c>peftsharp data stats|clean|split</c>: inspect, de-duplicate and split instruction JSONL files (the formats train reads).</summary>
public static class DataCommand
{
    public static Command Create() => new("data", "instruction data tools: stats, clean (duplicates and bad records), split")
    {
        DataStatsCommand.Create(),
        DataCleanCommand.Create(),
        DataSplitCommand.Create(),
    };

    public static Argument<string> FileArgument() => new("file") { Description = "JSONL file (alpaca, prompt/completion, messages or text records)" };

    public static Option<double> ThresholdOption() => new("--threshold")
    {
        Description = "near-duplicate Jaccard similarity of 3-word shingles (MinHash candidates, checked exactly)",
        DefaultValueFactory = _ => 0.8,
    };

    public static Option<bool> NoNearOption() => new("--no-near-duplicates") { Description = "remove exact duplicates only" };

    public static Option<int> MaxCharsOption() => new("--max-chars")
    {
        Description = "records with more characters (prompt + reply) are over-long",
        DefaultValueFactory = _ => 32768,
    };

    public static CleanOptions Options(double threshold, bool noNear, int maxChars)
    {
        if (maxChars < 1) throw new PeftSharpException($"--max-chars: expected at least 1, got {maxChars}");
        if (threshold is <= 0 or > 1) throw new PeftSharpException($"--threshold: expected a Jaccard similarity in (0, 1], got {threshold}");
        return new CleanOptions(threshold, !noNear, maxChars);
    }

    /// <summary>Counts by reason as "reason: n" lines on stdout.</summary>
    public static void PrintCounts(CleanResult result)
    {
        foreach (var (reason, n) in result.CountsByReason)
            Console.WriteLine($"  {reason,-16} {n}");
    }
}
