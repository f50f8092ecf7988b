using System.Collections.Concurrent;
using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.Peft;

/// <summary>
/// Python <c>re</c> patterns run on .NET's regex engine. The two agree on the syntax PEFT configs use (groups,
/// classes, quantifiers, alternation, <c>^</c>/<c>$</c>/<c>.</c> without flags); Python-only spellings of named groups
/// (<c>(?P&lt;name&gt;…)</c>, <c>(?P=name)</c>) and <c>\Z</c> are translated.
/// </summary>
internal static class PyRegex
{
    private static readonly ConcurrentDictionary<string, Regex> Cache = new(StringComparer.Ordinal);

    /// <summary><c>re.fullmatch(pattern, s)</c>.</summary>
    public static bool FullMatch(string pattern, string s) => Get(@"\A(?:" + Translate(pattern) + @")\z").IsMatch(s);

    /// <summary><c>re.match(pattern, s)</c>: a match anchored at the start (not the end).</summary>
    public static Match MatchStart(string pattern, string s) => Get(@"\A(?:" + Translate(pattern) + ")").Match(s);

    /// <summary>Throws <see cref="ArgumentException"/> when the pattern does not compile.</summary>
    public static void Check(string pattern) => Get(Translate(pattern));

    private static Regex Get(string netPattern) =>
        Cache.GetOrAdd(netPattern, p => new Regex(p, RegexOptions.CultureInvariant));

    /// <summary>Rewrites Python-only syntax into .NET syntax.</summary>
    internal static string Translate(string py)
    {
        if (py.IndexOf("(?P", StringComparison.Ordinal) < 0 && py.IndexOf(@"\Z", StringComparison.Ordinal) < 0)
            return py;
        var sb = new StringBuilder(py.Length);
        bool inClass = false;
        for (int i = 0; i < py.Length; i++)
        {
            char c = py[i];
            if (c == '\\' && i + 1 < py.Length)
            {
                char n = py[i + 1];
                sb.Append(!inClass && n == 'Z' ? @"\z" : $"\\{n}");
                i++;
                continue;
            }
            if (inClass)
            {
                if (c == ']') inClass = false;
                sb.Append(c);
                continue;
            }
            if (c == '[')
            {
                inClass = true;
                sb.Append(c);
                // a ']' right after '[' or '[^' is a literal
                if (i + 1 < py.Length && py[i + 1] == '^') { sb.Append('^'); i++; }
                if (i + 1 < py.Length && py[i + 1] == ']') { sb.Append(']'); i++; }
                continue;
            }
            if (c == '(' && string.CompareOrdinal(py, i, "(?P<", 0, 4) == 0)
            {
                sb.Append("(?<");
                i += 3;
                continue;
            }
            if (c == '(' && string.CompareOrdinal(py, i, "(?P=", 0, 4) == 0)
            {
                int close = py.IndexOf(')', i + 4);
                if (close > 0)
                {
                    sb.Append(@"\k<").Append(py, i + 4, close - i - 4).Append('>');
                    i = close;
                    continue;
                }
            }
            sb.Append(c);
        }
        return sb.ToString();
    }
}
