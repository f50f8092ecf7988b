using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace PeftSharp.Tokenization;

/// <summary>What a Hugging Face <c>Split</c> pre-tokenizer does with the pieces its pattern matches.</summary>
internal enum SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>One regex split step of a Hugging Face pre-tokenizer pipeline.</summary>
internal sealed class SplitStep(Regex regex, SplitBehavior behavior)
{
    private readonly CodePointRegex pattern = new(regex);

    /// <summary>The regex GPT-2 (and the ByteLevel pre-tokenizer with use_regex=true) splits words with.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public static SplitStep Gpt2() => new(new Regex(Gpt2Pattern, RegexOptions.Compiled), SplitBehavior.Isolated);

    /// <summary>Splits text[start..start+length) into pieces, appended to <paramref name="output"/>.</summary>
    public void Split(string text, int start, int length, List<(int Offset, int Length)> output)
    {
        // The piece is matched as a string of its own, like HF does (anchors and lookarounds stop at its ends).
        var parts = new List<(int Offset, int Length, bool IsMatch)>();
        int pos = 0;
        foreach (var m in pattern.Matches(text.AsSpan(start, length)))
        {
            if (m.Index > pos) parts.Add((start + pos, m.Index - pos, false));
            parts.Add((start + m.Index, m.Length, true));
            pos = m.Index + m.Length;
        }
        if (pos < length) parts.Add((start + pos, length - pos, false));

        switch (behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var p in parts) output.Add((p.Offset, p.Length));
                break;
            case SplitBehavior.Removed:
                foreach (var p in parts) if (!p.IsMatch) output.Add((p.Offset, p.Length));
                break;
            default:
                output.AddRange(Merge(parts, behavior));
                break;
        }
    }

    // A match joins the piece before it (MergedWithPrevious) or after it (MergedWithNext);
    // Contiguous joins runs of matches into one piece.
    private static List<(int, int)> Merge(List<(int Offset, int Length, bool IsMatch)> parts, SplitBehavior behavior)
    {
        var merged = new List<(int Offset, int Length)>();
        bool previousMatch = false, pendingMatch = false;
        foreach (var p in parts)
        {
            bool join = behavior switch
            {
                SplitBehavior.MergedWithPrevious => p.IsMatch && !previousMatch,
                SplitBehavior.MergedWithNext => pendingMatch && !p.IsMatch,
                _ => p.IsMatch && previousMatch, // Contiguous
            };
            if (join && merged.Count > 0)
                merged[^1] = (merged[^1].Offset, p.Offset + p.Length - merged[^1].Offset);
            else
                merged.Add((p.Offset, p.Length));
            previousMatch = p.IsMatch;
            // MergedWithNext: a match waits for the following non-match to join it.
            pendingMatch = behavior == SplitBehavior.MergedWithNext && p.IsMatch && !join;
        }
        return merged;
    }
}

/// <summary>
/// Hugging Face's pre-tokenization as a Microsoft.ML.Tokenizers <see cref="PreTokenizer"/>: first the
/// added tokens are cut out of the text (leftmost-longest, verbatim, as HF's AddedVocabulary does), then
/// every other stretch goes through the pipeline of split steps (each step re-splits the pieces of the last).
/// BpeTokenizer maps a piece that equals a special token straight to its id, and BPE-encodes the rest.
/// </summary>
internal sealed class HfPreTokenizer : PreTokenizer
{
    private readonly Regex? _addedTokens;
    private readonly IReadOnlyList<SplitStep> _steps;

    public HfPreTokenizer(IEnumerable<string> addedTokens, IReadOnlyList<SplitStep> steps)
    {
        // .NET alternation takes the first alternative that matches, so longest-first gives leftmost-longest.
        var alternatives = addedTokens.Distinct().OrderByDescending(t => t.Length).Select(Regex.Escape).ToList();
        _addedTokens = alternatives.Count == 0 ? null : new Regex(string.Join('|', alternatives), RegexOptions.Compiled);
        _steps = steps;
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => PreTokenize(text.ToString());

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        var pieces = new List<(int Offset, int Length)>();
        int pos = 0;
        if (_addedTokens is not null)
        {
            foreach (ValueMatch m in _addedTokens.EnumerateMatches(text))
            {
                SplitPlain(text, pos, m.Index - pos, pieces);
                pieces.Add((m.Index, m.Length));
                pos = m.Index + m.Length;
            }
        }
        SplitPlain(text, pos, text.Length - pos, pieces);
        return pieces;
    }

    private void SplitPlain(string text, int start, int length, List<(int Offset, int Length)> output)
    {
        if (length == 0) return;
        var pieces = new List<(int Offset, int Length)> { (start, length) };
        foreach (var step in _steps)
        {
            var next = new List<(int Offset, int Length)>();
            foreach (var (offset, len) in pieces) step.Split(text, offset, len, next);
            pieces = next;
        }
        output.AddRange(pieces);
    }
}

/// <summary>HF's NFC/NFD/NFKC/NFKD normalizers (Qwen2 uses NFC), applied in order.</summary>
internal sealed class UnicodeNormalizer(IReadOnlyList<NormalizationForm> forms) : Normalizer
{
    public override string Normalize(string original)
    {
        foreach (var form in forms) original = original.Normalize(form);
        return original;
    }

    public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
}

/// <summary>
/// GPT-2's byte-to-character table: byte-level BPE vocabularies spell every UTF-8 byte as one printable
/// character (space is 'Ġ', newline 'Ċ'). Microsoft.ML.Tokenizers applies it internally; we need it only to
/// look whole words up in the vocabulary for HF's ignore_merges.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] ByteToChar = Build();

    private static char[] Build()
    {
        var map = new char[256];
        int next = 256; // bytes that are not printable Latin-1 get the characters from U+0100 up, in byte order
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= 0x21 and <= 0x7E or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    public static string Encode(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }
}
