using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

/// <summary>
/// Data cleaning: near-duplicate recall on constructed pairs whose Jaccard similarity is computed here independently
/// (plain string sets), reasons for removal, and the hash split.
/// </summary>
public class DataCleanerTests
{
    static readonly string[] Words = Enumerable.Range(0, 400).Select(i => $"w{i}x{(char)('a' + i % 26)}").ToArray();

    static string[] RandomWords(Random random, int n) => Enumerable.Range(0, n).Select(_ => Words[random.Next(Words.Length)]).ToArray();

    // Independent Jaccard of 3-word shingles: words split on spaces, shingles as strings.
    static double Jaccard(string[] x, string[] y)
    {
        static HashSet<string> Shingles(string[] w) => Enumerable.Range(0, w.Length - 2).Select(i => $"{w[i]} {w[i + 1]} {w[i + 2]}").ToHashSet();
        var a = Shingles(x);
        var b = Shingles(y);
        return a.Intersect(b).Count() / (double)a.Union(b).Count();
    }

    static string Record(string[] words) => $"{{\"instruction\": \"Q\", \"output\": \"{string.Join(' ', words)}\"}}";

    [Fact]
    public void NearDuplicateRecallOnConstructedPairs()
    {
        var random = new Random(5);
        var lines = new List<string>();
        var pairs = new List<(int Original, int Copy, double Jaccard)>();
        for (int i = 0; i < 60; i++)
        {
            var original = RandomWords(random, 200);
            var copy = (string[])original.Clone();
            // One to four changed words: similarities from about 0.94 down to about 0.8.
            int changes = 1 + i % 4;
            for (int c = 0; c < changes; c++) copy[random.Next(copy.Length)] = "changed" + c;
            lines.Add(Record(original));
            lines.Add(Record(copy));
            pairs.Add((lines.Count - 1, lines.Count, Jaccard(original, copy))); // 1-based lines
        }
        var records = lines.Select((l, i) => DataRecord.Parse(i + 1, l)).ToList();
        var result = DataCleaner.Analyze(records, new CleanOptions(Threshold: 0.8));
        var removed = result.Removed.ToDictionary(r => r.Line);
        int above = 0, found = 0;
        foreach (var (original, copy, j) in pairs)
        {
            if (j >= 0.8)
            {
                above++;
                if (removed.TryGetValue(copy, out var r) && r.Reason == RemovalReasons.NearDuplicate && r.DuplicateOf == original) found++;
            }
            else Assert.False(removed.ContainsKey(copy), $"pair with Jaccard {j:F3} < 0.8 removed"); // verified exactly: never below the threshold
        }
        Assert.True(above >= 40, $"only {above} constructed pairs reach the threshold");
        Assert.True(found >= 0.95 * above, $"recall {found}/{above}");
        Assert.DoesNotContain(result.Removed, r => pairs.Any(p => p.Original == r.Line)); // originals are kept
    }

    [Fact]
    public void BandingCatchesAPairAtTheThresholdWithHighProbability()
    {
        var (bands, rows) = MinHash.BandsFor(0.8, 128);
        Assert.True(bands * rows <= 128);
        double atThreshold = 1 - Math.Pow(1 - Math.Pow(0.8, rows), bands); // the S-curve, written out here
        Assert.True(atThreshold >= 0.98, $"P(candidate | s = 0.8) = {atThreshold:F3} with b={bands}, r={rows}");
    }

    [Fact]
    public void EveryRemovalHasItsReason()
    {
        string[] lines =
        [
            """{"instruction": "A", "output": "one two three four"}""",
            """{"instruction": "A", "output": "one two three four"}""",   // exact duplicate of 1
            """{"instruction": "B", "output": ""}""",                     // missing reply
            """{"instruction": "C"}""",                                   // missing reply
            """{"prompt": "p", "completion": "c"}""",                     // mixed format
            """not json""",                                               // malformed
            """{"instruction": " ", "output": " "}""",                    // empty
            """{"instruction": "D", "output": "x y z w v u t s r q p o n m"}""",
        ];
        var records = lines.Select((l, i) => DataRecord.Parse(i + 1, l)).ToList();
        var result = DataCleaner.Analyze(records, new CleanOptions(MaxChars: 20));
        var reasons = result.Removed.ToDictionary(r => r.Line, r => r.Reason);
        Assert.Equal(RemovalReasons.ExactDuplicate, reasons[2]);
        Assert.Equal(RemovalReasons.MissingReply, reasons[3]);
        Assert.Equal(RemovalReasons.MissingReply, reasons[4]);
        Assert.Equal(RemovalReasons.MixedFormat, reasons[5]);
        Assert.Equal(RemovalReasons.Malformed, reasons[6]);
        Assert.Equal(RemovalReasons.Empty, reasons[7]);
        Assert.Equal(RemovalReasons.TooLong, reasons[8]);                 // 1 + 27 characters > 20
        Assert.Equal([1], result.Kept.Select(r => r.Line));
        Assert.Equal(2, result.CountsByReason[RemovalReasons.MissingReply]);
        Assert.Equal(lines.Length, result.Kept.Count + result.Removed.Count); // nothing dropped silently
    }

    [Fact]
    public void HashSplitIsDeterministicAndOrderFree()
    {
        var records = Enumerable.Range(0, 400).Select(i => DataRecord.Parse(i + 1, $"{{\"prompt\": \"p{i}\", \"completion\": \"c{i}\"}}")).ToList();
        var (train, validation) = DataSplitter.Split(records, 0.25, seed: 3, "x.jsonl");
        Assert.Equal(400, train.Count + validation.Count);
        Assert.InRange(validation.Count, 70, 130); // binomial(400, 0.25): mean 100, sd ≈ 8.7
        var reversed = records.AsEnumerable().Reverse().Select((r, i) => r with { Line = i + 1 }).ToList();
        var (_, validation2) = DataSplitter.Split(reversed, 0.25, seed: 3, "x.jsonl");
        Assert.Equal(validation.Select(r => r.Raw).Order(), validation2.Select(r => r.Raw).Order());
        var (_, other) = DataSplitter.Split(records, 0.25, seed: 4, "x.jsonl");
        Assert.NotEqual(validation.Select(r => r.Raw), other.Select(r => r.Raw));
    }
}
