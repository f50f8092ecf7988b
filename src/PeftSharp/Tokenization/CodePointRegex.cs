using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.Tokenization;

/// <summary>
/// A regex whose character classes (<c>\p{L}</c>, <c>\p{N}</c>, <c>[^\s\p{L}\p{N}]</c>...) apply to Unicode code points,
/// as in Hugging Face tokenizers (Oniguruma on UTF-8), and not to UTF-16 code units as in .NET: there, a character
/// outside the Basic Multilingual Plane (emoji, 𝐀, 𝟏) is two surrogates of category Cs, so <c>\p{L}+</c> would not
/// match "𝐀" and <c>[^\s\p{L}\p{N}]+</c> would cut an emoji in halves.
/// </summary>
/// <remarks>
/// .NET's regex engine has no code-point mode, so each surrogate pair is matched as one stand-in BMP character of the
/// same general category (same letter/number/symbol class, same case), and the matches are mapped back to the text.
/// Patterns that name supplementary characters literally are not supported (none of the known tokenizers do).
/// </remarks>
internal sealed class CodePointRegex(Regex regex)
{
    public Regex Regex { get; } = regex;

    // For each general category, a BMP character of that category outside ASCII and the CJK blocks.
    private static readonly char[] StandIn = BuildStandIns();

    private static char[] BuildStandIns()
    {
        var table = new char[32];
        for (int c = 0x100; c <= 0xFFFF; c++)
        {
            if (c is >= 0xD800 and <= 0xDFFF or >= 0x3000 and <= 0x9FFF) continue;
            int cat = (int)CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (table[cat] == '\0') table[cat] = (char)c;
        }
        return table;
    }

    /// <summary>Non-empty matches in <paramref name="text"/>, as (index, length) in <paramref name="text"/>'s own UTF-16 positions.</summary>
    public List<(int Index, int Length)> Matches(ReadOnlySpan<char> text)
    {
        var result = new List<(int, int)>();
        if (text.IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            foreach (ValueMatch m in Regex.EnumerateMatches(text))
                if (m.Length > 0) result.Add((m.Index, m.Length));
            return result;
        }

        // One stand-in per surrogate pair; starts[i] is where stand-in text's char i begins in the original.
        var chars = new char[text.Length];
        var starts = new int[text.Length + 1];
        int n = 0;
        for (int i = 0; i < text.Length; i++)
        {
            starts[n] = i;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                var cat = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1]));
                chars[n++] = StandIn[(int)cat] is var s and not '\0' ? s : '\uE000';
                i++;
            }
            else chars[n++] = text[i];
        }
        starts[n] = text.Length;
        foreach (ValueMatch m in Regex.EnumerateMatches(chars.AsSpan(0, n)))
            if (m.Length > 0) result.Add((starts[m.Index], starts[m.Index + m.Length] - starts[m.Index]));
        return result;
    }
}
