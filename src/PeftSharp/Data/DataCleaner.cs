using System.Text;
using PeftSharp.Tensors;

namespace PeftSharp.Data;

/// <summary>Why a record is removed, in the order the checks run (a record gets the first that applies).</summary>
public static class RemovalReasons
{
    /// <summary>Not JSON, not an object, or no known fields.</summary>
    public const string Malformed = "malformed";            // not JSON, not an object, or no known fields
    /// <summary>No text at all.</summary>
    public const string Empty = "empty";                    // no text at all
    /// <summary>Not the file's main format (<c>train</c> reads one format per file).</summary>
    public const string MixedFormat = "mixed_format";       // not the file's main format (train reads one format per file)
    /// <summary>No output, completion or assistant reply, or an empty one.</summary>
    public const string MissingReply = "missing_reply";     // no output/completion/assistant reply, or an empty one
    /// <summary>More characters than <see cref="CleanOptions.MaxChars"/>.</summary>
    public const string TooLong = "too_long";               // more characters than the limit
    /// <summary>Same prompt and reply as an earlier kept record.</summary>
    public const string ExactDuplicate = "exact_duplicate"; // same prompt and reply as an earlier kept record
    /// <summary>Shingle Jaccard similarity at or above <see cref="CleanOptions.Threshold"/> with an earlier kept record.</summary>
    public const string NearDuplicate = "near_duplicate";   // shingle Jaccard similarity ≥ threshold with an earlier kept record

    /// <summary>Every reason, in the order the checks run.</summary>
    public static readonly string[] All = [Malformed, Empty, MixedFormat, MissingReply, TooLong, ExactDuplicate, NearDuplicate];
}

/// <summary>What <see cref="DataCleaner.Analyze"/> checks.</summary>
/// <param name="Threshold">Jaccard similarity of word shingles at or above which a record is a near duplicate of an earlier one (default 0.8).</param>
/// <param name="NearDuplicates">Whether near duplicates are looked for at all (MinHash); exact duplicates always are.</param>
/// <param name="MaxChars">Records with more characters (prompt plus reply) are removed as <see cref="RemovalReasons.TooLong"/> (default 32768).</param>
public sealed record CleanOptions(double Threshold = 0.8, bool NearDuplicates = true, int MaxChars = 32768);

/// <summary>A removed line: its number, why, the line it duplicates (for duplicates) and a detail.</summary>
public sealed record RemovedRecord(int Line, string Reason, int? DuplicateOf, string? Detail, string Raw);

/// <summary>What <see cref="DataCleaner.Analyze"/> found in a file.</summary>
/// <param name="Records">Records (non-blank lines) read.</param>
/// <param name="MainFormat">The most common record format (on a tie, the one seen first); null when no record has a format.</param>
/// <param name="Formats">How many records have each format.</param>
/// <param name="Kept">The records that pass every check, in file order.</param>
/// <param name="Removed">The removed records with their reasons, in file order.</param>
public sealed record CleanResult(
    int Records, RecordFormat? MainFormat, IReadOnlyDictionary<RecordFormat, int> Formats,
    IReadOnlyList<DataRecord> Kept, IReadOnlyList<RemovedRecord> Removed)
{
    /// <summary>Removed records per reason, every reason listed (0 when none).</summary>
    public IReadOnlyDictionary<string, int> CountsByReason =>
        RemovalReasons.All.ToDictionary(r => r, r => Removed.Count(x => x.Reason == r));
}

/// <summary>
/// Finds what <c>peftsharp data clean</c> removes from an instruction JSONL file, and why. The input is only read;
/// writing goes through <see cref="WriteLines"/>, which writes a new file atomically.
/// </summary>
public static class DataCleaner
{
    /// <summary>The non-blank lines of a JSONL file, parsed (blank lines are not records and are not counted).</summary>
    public static List<DataRecord> Read(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: file not found");
        var records = new List<DataRecord>();
        int line = 0;
        foreach (var raw in File.ReadLines(path))
        {
            line++;
            if (!string.IsNullOrWhiteSpace(raw)) records.Add(DataRecord.Parse(line, raw));
        }
        return records;
    }

    /// <summary>
    /// Runs every check on <paramref name="records"/> in file order: each record gets the first reason in <see cref="RemovalReasons.All"/> that applies, and duplicates are judged against the records kept before it.
    /// </summary>
    public static CleanResult Analyze(IReadOnlyList<DataRecord> records, CleanOptions options)
    {
        var formats = records.Where(r => r.Format is not null).GroupBy(r => r.Format!.Value).ToDictionary(g => g.Key, g => g.Count());
        // The most common format; on a tie, the one seen first.
        RecordFormat? main = formats.Count == 0 ? null
            : formats.OrderByDescending(kv => kv.Value).ThenBy(kv => records.First(r => r.Format == kv.Key).Line).First().Key;
        var kept = new List<DataRecord>();
        var removed = new List<RemovedRecord>();
        var exact = new Dictionary<string, int>(StringComparer.Ordinal);
        var minHash = options.NearDuplicates ? new MinHash(threshold: options.Threshold) : null;
        var buckets = new Dictionary<ulong, List<int>>();   // band key → indices into keptShingles
        var keptShingles = new List<(int Line, HashSet<ulong> Shingles)>();
        foreach (var r in records)
        {
            string? reason = null, detail = null;
            int? duplicateOf = null;
            if (r.Format is null) (reason, detail) = (RemovalReasons.Malformed, r.Problem);
            else if (string.IsNullOrWhiteSpace(r.Prompt) && string.IsNullOrWhiteSpace(r.Reply)) reason = RemovalReasons.Empty;
            else if (r.Format != main) (reason, detail) = (RemovalReasons.MixedFormat, $"a {r.Format} record; the file's main format is {main}");
            else if (r.Problem is not null) (reason, detail) = (RemovalReasons.MissingReply, r.Problem);
            else if (r.Format != RecordFormat.Text && string.IsNullOrWhiteSpace(r.Reply)) (reason, detail) = (RemovalReasons.MissingReply, "empty reply");
            else if (r.Characters > options.MaxChars) (reason, detail) = (RemovalReasons.TooLong, $"{r.Characters} characters > {options.MaxChars}");
            else if (exact.TryGetValue(r.Content, out int first)) (reason, duplicateOf) = (RemovalReasons.ExactDuplicate, first);
            if (reason is null && minHash is not null)
            {
                var shingles = minHash.Shingles(r.Content);
                var keys = minHash.BandKeys(minHash.Signature(shingles));
                var seen = new HashSet<int>();
                foreach (var key in keys)
                    if (buckets.TryGetValue(key, out var list))
                        foreach (int k in list)
                            if (seen.Add(k))
                            {
                                double j = MinHash.Jaccard(shingles, keptShingles[k].Shingles);
                                if (j >= options.Threshold && duplicateOf is null)
                                    (reason, duplicateOf, detail) = (RemovalReasons.NearDuplicate, keptShingles[k].Line, $"Jaccard {j:F3}");
                            }
                if (reason is null)
                {
                    int index = keptShingles.Count;
                    keptShingles.Add((r.Line, shingles));
                    foreach (var key in keys)
                    {
                        if (!buckets.TryGetValue(key, out var list)) buckets[key] = list = [];
                        list.Add(index);
                    }
                }
            }
            if (reason is null)
            {
                kept.Add(r);
                exact[r.Content] = r.Line;
            }
            else removed.Add(new RemovedRecord(r.Line, reason, duplicateOf, detail, r.Raw));
        }
        return new CleanResult(records.Count, main, formats, kept, removed);
    }

    /// <summary>Writes lines (each followed by \n) to a temporary file beside <paramref name="path"/> and renames it into place.</summary>
    public static void WriteLines(string path, IEnumerable<string> lines)
    {
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null) Directory.CreateDirectory(folder);
        AtomicFile.Write(path, stream =>
        {
            using var writer = new StreamWriter(stream, new UTF8Encoding(false), 1 << 16, leaveOpen: true) { NewLine = "\n" };
            foreach (var line in lines) writer.WriteLine(line);
        });
    }

    /// <summary>Refuses an output path that is the input file: the input is never modified.</summary>
    public static void CheckNotInput(string input, string output, string flag)
    {
        if (string.Equals(Path.GetFullPath(input), Path.GetFullPath(output), StringComparison.Ordinal))
            throw new PeftSharpException($"{flag} {output}: is the input file; the input is never modified, choose another path");
    }
}
