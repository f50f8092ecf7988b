using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using static PeftSharp.Jinja.JinjaValues;

namespace PeftSharp.Jinja;

/// <summary>
/// Python's <c>str</c> as templates see it: its methods (<c>content.strip()</c>, <c>text.split('\n')</c>), its
/// case and whitespace rules, and its two formatting languages, <c>'%s' % x</c> and <c>'{}'.format(x)</c>.
/// Indices and lengths count code points, as Python does, not UTF-16 units.
/// </summary>
internal static class JinjaStrings
{
    public static JinjaFunction? Method(string s, string name, int line)
    {
        string Arg(IReadOnlyList<object?> a, int i, string method) =>
            i < a.Count && a[i] is string x ? x : throw new JinjaException($"str.{method}() needs a string argument", line);
        string? Chars(IReadOnlyList<object?> a, string method) => a.Count == 0 || a[0] is null ? null
            : a[0] as string ?? throw new JinjaException($"str.{method}() needs a string or None", line);
        long Int(IReadOnlyList<object?> a, int i, IReadOnlyDictionary<string, object?> k, string key, long fallback) =>
            (i < a.Count ? a[i] : k.GetValueOrDefault(key, fallback)) is var v && v is long or bool ? ToLong(v)
            : throw new JinjaException($"str.{name}() needs an integer {key}", line);
        object? Sep(IReadOnlyList<object?> a, IReadOnlyDictionary<string, object?> k) => a.Count > 0 ? a[0] : k.GetValueOrDefault("sep");
        JinjaFunction F(Func<IReadOnlyList<object?>, IReadOnlyDictionary<string, object?>, object?> f) => new("str." + name, f);
        return name switch
        {
            "strip" => F((a, _) => Strip(s, Chars(a, name), start: true, end: true)),
            "lstrip" => F((a, _) => Strip(s, Chars(a, name), start: true, end: false)),
            "rstrip" => F((a, _) => Strip(s, Chars(a, name), start: false, end: true)),
            "upper" => F((_, _) => Upper(s)),
            "lower" or "casefold" => F((_, _) => Lower(s)),
            "swapcase" => F((_, _) => string.Concat(s.Select(c => char.IsUpper(c) ? Lower(c.ToString()) : Upper(c.ToString())))),
            "title" => F((_, _) => Title(s)),
            "capitalize" => F((_, _) => Capitalize(s)),
            "startswith" => F((a, _) => Affixes(a, name, line).Any(p => s.StartsWith(p, StringComparison.Ordinal))),
            "endswith" => F((a, _) => Affixes(a, name, line).Any(p => s.EndsWith(p, StringComparison.Ordinal))),
            "split" => F((a, k) => Split(s, Sep(a, k), Int(a, 1, k, "maxsplit", -1), line)),
            "rsplit" => F((a, k) => RightSplit(s, Sep(a, k), Int(a, 1, k, "maxsplit", -1), line)),
            "splitlines" => F((a, k) => SplitLines(s, IsTrue(a.Count > 0 ? a[0] : k.GetValueOrDefault("keepends")))),
            "partition" => F((a, _) => Partition(s, Arg(a, 0, name), fromRight: false)),
            "rpartition" => F((a, _) => Partition(s, Arg(a, 0, name), fromRight: true)),
            "replace" => F((a, _) => Replace(s, Arg(a, 0, name), Arg(a, 1, name), a.Count > 2 ? Int(a, 2, EmptyKwargs, "count", -1) : -1)),
            "find" => F((a, _) => CodePointIndex(s, s.IndexOf(Arg(a, 0, name), StringComparison.Ordinal))),
            "rfind" => F((a, _) => CodePointIndex(s, s.LastIndexOf(Arg(a, 0, name), StringComparison.Ordinal))),
            "index" => F((a, _) => CodePointIndex(s, s.IndexOf(Arg(a, 0, name), StringComparison.Ordinal)) is var i and >= 0 ? i
                : throw new JinjaException("str.index(): substring not found", line)),
            "rindex" => F((a, _) => CodePointIndex(s, s.LastIndexOf(Arg(a, 0, name), StringComparison.Ordinal)) is var i and >= 0 ? i
                : throw new JinjaException("str.rindex(): substring not found", line)),
            "count" => F((a, _) => CountOccurrences(s, Arg(a, 0, name))),
            "join" => F((a, _) => string.Join(s, Iterate(a.Count > 0 ? a[0] : null, line).Select(x =>
                x as string ?? throw new JinjaException($"str.join() needs strings, got a {TypeName(x)}", line)))),
            "removeprefix" => F((a, _) => s.StartsWith(Arg(a, 0, name), StringComparison.Ordinal) ? s[Arg(a, 0, name).Length..] : s),
            "removesuffix" => F((a, _) => Arg(a, 0, name) is var x && x.Length > 0 && s.EndsWith(x, StringComparison.Ordinal) ? s[..^x.Length] : s),
            "center" or "ljust" or "rjust" => F((a, _) => Pad(s, Int(a, 0, EmptyKwargs, "width", 0), a.Count > 1 ? Arg(a, 1, name) : " ",
                name switch { "center" => '^', "ljust" => '<', _ => '>' }, line)),
            "zfill" => F((a, _) => ZeroFill(s, Int(a, 0, EmptyKwargs, "width", 0))),
            "isdigit" or "isnumeric" or "isdecimal" => F((_, _) => s.Length > 0 && s.All(char.IsDigit)),
            "isspace" => F((_, _) => s.Length > 0 && s.All(IsSpace)),
            "isalpha" => F((_, _) => s.Length > 0 && s.All(char.IsLetter)),
            "isalnum" => F((_, _) => s.Length > 0 && s.All(char.IsLetterOrDigit)),
            "islower" => F((_, _) => IsLower(s)),
            "isupper" => F((_, _) => IsUpper(s)),
            "format" => F((a, k) => BraceFormat(s, a, k, line)),
            _ => null,
        };
    }

    static readonly IReadOnlyDictionary<string, object?> EmptyKwargs = new Dictionary<string, object?>();

    /// <summary>Python's whitespace (str.isspace, str.split(), str.strip()): .NET's, plus the separators U+001C–U+001F.</summary>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1c' and <= '\x1f';

    // Characters that have case; Python's title() and islower() look only at these.
    static bool IsCased(char c) => char.IsUpper(c) || char.IsLower(c) || char.GetUnicodeCategory(c) == UnicodeCategory.TitlecaseLetter;

    public static bool IsLower(string s) => s.Any(IsCased) && !s.Any(c => IsCased(c) && !char.IsLower(c));
    public static bool IsUpper(string s) => s.Any(IsCased) && !s.Any(c => IsCased(c) && !char.IsUpper(c));

    public static string Strip(string s, string? chars, bool start, bool end)
    {
        Func<char, bool> strip = chars is null ? IsSpace : chars.Contains;
        int from = 0, to = s.Length;
        if (start) while (from < to && strip(s[from])) from++;
        if (end) while (to > from && strip(s[to - 1])) to--;
        return s[from..to];
    }

    // Python's full case mappings where .NET's invariant ones differ: ß and the Latin ligatures become two or
    // three letters, the digraphs have a title case of their own, İ lowers to i and a combining dot.
    static readonly Dictionary<char, string> UpperSpecial = new()
    {
        ['ß'] = "SS", ['ﬀ'] = "FF", ['ﬁ'] = "FI", ['ﬂ'] = "FL", ['ﬃ'] = "FFI", ['ﬄ'] = "FFL", ['ﬅ'] = "ST", ['ﬆ'] = "ST", ['ŉ'] = "ʼN",
    };
    static readonly Dictionary<char, string> TitleSpecial = new()
    {
        ['ß'] = "Ss", ['ﬀ'] = "Ff", ['ﬁ'] = "Fi", ['ﬂ'] = "Fl", ['ﬃ'] = "Ffi", ['ﬄ'] = "Ffl", ['ﬅ'] = "St", ['ﬆ'] = "St", ['ŉ'] = "ʼN",
        ['Ǆ'] = "ǅ", ['ǅ'] = "ǅ", ['ǆ'] = "ǅ", ['Ǉ'] = "ǈ", ['ǈ'] = "ǈ", ['ǉ'] = "ǈ", ['Ǌ'] = "ǋ", ['ǋ'] = "ǋ", ['ǌ'] = "ǋ", ['Ǳ'] = "ǲ", ['ǲ'] = "ǲ", ['ǳ'] = "ǲ",
    };

    /// <summary>str.upper().</summary>
    public static string Upper(string s)
    {
        string upper = s.ToUpperInvariant();
        return upper.Any(UpperSpecial.ContainsKey) ? string.Concat(upper.Select(c => UpperSpecial.GetValueOrDefault(c) ?? c.ToString())) : upper;
    }

    /// <summary>str.lower().</summary>
    public static string Lower(string s) => s.ToLowerInvariant().Replace("İ", "i\u0307"); // (.NET may leave İ as it is)

    // The title case of one character (the first of a word for title() and capitalize()).
    static string TitleChar(string c) => c.Length == 1 && TitleSpecial.TryGetValue(c[0], out var t) ? t : c.ToUpperInvariant();

    /// <summary>str.title(): a cased character after an uncased one is title case, every other one lower ("1st" → "1St").</summary>
    public static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (string c in StringElements(s))
        {
            sb.Append(previousCased ? Lower(c) : TitleChar(c));
            previousCased = IsCased(c[0]);
        }
        return sb.ToString();
    }

    /// <summary>str.capitalize(): the first character in title case, the rest lower.</summary>
    public static string Capitalize(string s) => s.Length == 0 ? s : StringElements(s)[0] is var first ? TitleChar(first) + Lower(s[first.Length..]) : s;

    static IEnumerable<string> Affixes(IReadOnlyList<object?> a, string method, int line) => a.Count > 0 ? a[0] switch
    {
        string p => [p],
        List<object?> l => l.Select(x => x as string ?? throw new JinjaException($"str.{method}() needs strings", line)),
        _ => throw new JinjaException($"str.{method}() needs a string or a tuple of strings", line),
    } : throw new JinjaException($"str.{method}() needs an argument", line);

    /// <summary>str.split(sep, maxsplit): without sep, runs of whitespace split and the ends are ignored.</summary>
    public static List<object?> Split(string s, object? separator, long maxSplit, int line)
    {
        var parts = new List<object?>();
        if (separator is null)
        {
            int i = 0;
            while (i < s.Length)
            {
                while (i < s.Length && IsSpace(s[i])) i++;
                if (i >= s.Length) break;
                if (maxSplit >= 0 && parts.Count == maxSplit) { parts.Add(s[i..]); break; } // the rest, trailing space and all
                int start = i;
                while (i < s.Length && !IsSpace(s[i])) i++;
                parts.Add(s[start..i]);
            }
            return parts;
        }
        string sep = NonEmptySeparator(separator, line);
        int from = 0;
        while (maxSplit < 0 || parts.Count < maxSplit)
        {
            int at = s.IndexOf(sep, from, StringComparison.Ordinal);
            if (at < 0) break;
            parts.Add(s[from..at]);
            from = at + sep.Length;
        }
        parts.Add(s[from..]);
        return parts;
    }

    /// <summary>str.rsplit(sep, maxsplit): split from the right, so only the last maxsplit separators count.</summary>
    static List<object?> RightSplit(string s, object? separator, long maxSplit, int line)
    {
        var parts = new List<object?>();
        if (separator is null)
        {
            int i = s.Length;
            while (i > 0)
            {
                while (i > 0 && IsSpace(s[i - 1])) i--;
                if (i == 0) break;
                if (maxSplit >= 0 && parts.Count == maxSplit) { parts.Add(s[..i]); break; }
                int end = i;
                while (i > 0 && !IsSpace(s[i - 1])) i--;
                parts.Add(s[i..end]);
            }
        }
        else
        {
            string sep = NonEmptySeparator(separator, line);
            int to = s.Length;
            while (maxSplit < 0 || parts.Count < maxSplit)
            {
                int at = to == 0 ? -1 : s.LastIndexOf(sep, to - 1, StringComparison.Ordinal);
                if (at < 0 || at + sep.Length > to) break;
                parts.Add(s[(at + sep.Length)..to]);
                to = at;
            }
            parts.Add(s[..to]);
        }
        parts.Reverse();
        return parts;
    }

    static string NonEmptySeparator(object? separator, int line) => separator is string { Length: > 0 } sep ? sep
        : throw new JinjaException("str.split() needs a non-empty string separator or None", line);

    // str.splitlines(): Python ends lines at \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, \u2028 and \u2029.
    static List<object?> SplitLines(string s, bool keepEnds)
    {
        var lines = new List<object?>();
        int start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c is not ('\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')) continue;
            int end = i;
            if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n') i++;
            lines.Add(s[start..(keepEnds ? i + 1 : end)]);
            start = i + 1;
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }

    static JinjaTuple Partition(string s, string sep, bool fromRight)
    {
        int at = fromRight ? s.LastIndexOf(sep, StringComparison.Ordinal) : s.IndexOf(sep, StringComparison.Ordinal);
        if (at < 0) return fromRight ? new(["", "", s]) : new([s, "", ""]);
        return new([s[..at], sep, s[(at + sep.Length)..]]);
    }

    /// <summary>str.replace(old, new, count); an empty old inserts new between the characters.</summary>
    public static string Replace(string s, string old, string replacement, long count)
    {
        if (old.Length == 0)
        {
            var chars = StringElements(s);
            var sb = new StringBuilder();
            for (int i = 0; i <= chars.Count; i++)
            {
                if (count < 0 || i < count) sb.Append(replacement);
                if (i < chars.Count) sb.Append(chars[i]);
            }
            return sb.ToString();
        }
        if (count < 0) return s.Replace(old, replacement, StringComparison.Ordinal);
        var result = new StringBuilder();
        int from = 0;
        for (long n = 0; n < count; n++)
        {
            int at = s.IndexOf(old, from, StringComparison.Ordinal);
            if (at < 0) break;
            result.Append(s, from, at - from).Append(replacement);
            from = at + old.Length;
        }
        return result.Append(s, from, s.Length - from).ToString();
    }

    static long CodePointIndex(string s, int utf16Index) => utf16Index < 0 ? -1 : StringElements(s[..utf16Index]).Count;

    static long CountOccurrences(string s, string sub)
    {
        if (sub.Length == 0) return StringElements(s).Count + 1;
        long n = 0;
        for (int at = s.IndexOf(sub, StringComparison.Ordinal); at >= 0; at = s.IndexOf(sub, at + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    // Fills to width code points; align is '<', '>' or '^'. str.center puts an odd fill character on the right,
    // except when the width is odd too, then on the left.
    static string Pad(string s, long width, string fill, char align, int line)
    {
        if (StringElements(fill).Count != 1) throw new JinjaException("the fill character must be exactly one character", line);
        int padding = (int)Math.Max(0, width - StringElements(s).Count);
        if (padding == 0) return s;
        int left = align switch { '<' => 0, '>' => padding, _ => padding / 2 + (padding & (int)width & 1) };
        return string.Concat(Enumerable.Repeat(fill, left)) + s + string.Concat(Enumerable.Repeat(fill, padding - left));
    }

    static string ZeroFill(string s, long width)
    {
        int padding = (int)Math.Max(0, width - StringElements(s).Count);
        int sign = s.Length > 0 && s[0] is '+' or '-' ? 1 : 0;
        return s[..sign] + new string('0', padding) + s[sign..];
    }

    // ---- "%s and %d" % (a, b): printf-style formatting ----

    static readonly Regex PercentSpec = new(@"%(?:\((?<key>[^)]*)\))?(?<flags>[-+ #0]*)(?<width>\d+)?(?:\.(?<precision>\d+))?(?<type>[diouxXeEfFgGcrsa%])?",
        RegexOptions.CultureInvariant);

    /// <summary>Python's <c>format % args</c>: a tuple gives the values in order, a dict the %(name)s ones, anything else is one value.</summary>
    public static string PercentFormat(string format, object? args, int line)
    {
        List<object?> values = args is JinjaTuple tuple ? tuple : [args];
        var mapping = args as OrderedDictionary<string, object?>;
        var sb = new StringBuilder();
        int next = 0, from = 0;
        foreach (Match m in PercentSpec.Matches(format))
        {
            sb.Append(format, from, m.Index - from);
            from = m.Index + m.Length;
            if (!m.Groups["type"].Success) throw new JinjaException($"unsupported format character at '{format[m.Index..]}'", line);
            char type = m.Groups["type"].Value[0];
            if (type == '%' && m.Length == 2) { sb.Append('%'); continue; }
            object? value;
            if (m.Groups["key"].Success)
            {
                if (mapping is null) throw new JinjaException("a %(name) format needs a dict", line);
                value = mapping.TryGetValue(m.Groups["key"].Value, out var v) ? v : throw new JinjaException($"no key '{m.Groups["key"].Value}' to format", line);
            }
            else if (next < values.Count) value = values[next++];
            else throw new JinjaException("not enough arguments for format string", line);
            var spec = new FormatSpec(m.Groups["flags"].Value, m.Groups["width"].Success ? int.Parse(m.Groups["width"].Value, CultureInfo.InvariantCulture) : 0,
                m.Groups["precision"].Success ? int.Parse(m.Groups["precision"].Value, CultureInfo.InvariantCulture) : null, type);
            sb.Append(FormatValue(value, spec, line));
        }
        sb.Append(format, from, format.Length - from);
        // Python checks for unused values only when they are a tuple or a single value without items (a list,
        // dict or undefined value has items, so "text" % [1] is just "text").
        bool hasItems = args is OrderedDictionary<string, object?> or Undefined || args is List<object?> and not JinjaTuple;
        if (!hasItems && next < values.Count) throw new JinjaException("not all arguments converted during string formatting", line);
        return sb.ToString();
    }

    /// <summary>A conversion: flags (- left, 0 zeros, + or space for the sign, # alternate form), width, precision, type.</summary>
    sealed record FormatSpec(string Flags, int Width, int? Precision, char Type, char Fill = ' ', char Align = '\0');

    static string FormatValue(object? value, FormatSpec spec, int line)
    {
        string text;
        bool numeric = true;
        switch (spec.Type)
        {
            case 's' or 'r' or 'a':
                text = spec.Type == 's' ? ToStr(value) : Repr(value);
                if (spec.Precision is int p) text = string.Concat(StringElements(text).Take(p));
                numeric = false;
                break;
            case 'c':
                text = value is string { Length: > 0 } c ? c : value is long code ? char.ConvertFromUtf32((int)code)
                    : throw new JinjaException("%c needs an integer or a single character", line);
                numeric = false;
                break;
            case 'd' or 'i' or 'u':
                text = Signed(IntegerOf(value, spec.Type, allowFloat: true, line), spec, v => v.ToString(CultureInfo.InvariantCulture));
                break;
            case 'x' or 'X' or 'o':
            {
                string prefix = spec.Flags.Contains('#') ? (spec.Type == 'o' ? "0o" : "0" + spec.Type) : "";
                string digits(long v) => prefix + (spec.Type == 'o' ? Convert.ToString(v, 8) : v.ToString(spec.Type == 'x' ? "x" : "X", CultureInfo.InvariantCulture));
                text = Signed(IntegerOf(value, spec.Type, allowFloat: false, line), spec, digits);
                break;
            }
            default: // e E f F g G
                if (!IsNumber(value)) throw new JinjaException($"%{spec.Type} format: a real number is required, not {TypeName(value)}", line);
                double d = ToDouble(value);
                text = (d < 0 || double.IsNegative(d) ? "-" : spec.Flags.Contains('+') ? "+" : spec.Flags.Contains(' ') ? " " : "")
                       + FloatFormat(Math.Abs(d), spec.Type, spec.Precision ?? 6, spec.Flags.Contains('#'));
                break;
        }
        return Align(text, spec, numeric);
    }

    static long IntegerOf(object? value, char type, bool allowFloat, int line) => value switch
    {
        long or bool => ToLong(value),
        double d when allowFloat => (long)Math.Truncate(d),
        _ => throw new JinjaException($"%{type} format: an integer is required, not {TypeName(value)}", line),
    };

    static string Signed(long v, FormatSpec spec, Func<long, string> digits) =>
        (v < 0 ? "-" : spec.Flags.Contains('+') ? "+" : spec.Flags.Contains(' ') ? " " : "") + digits(Math.Abs(v));

    // Pads to the width. printf style: left-aligned with '-', zeros after the sign with '0' (numbers), else
    // right-aligned; str.format sets Align itself ('<', '>', '^', or '=' for fill after the sign).
    static string Align(string text, FormatSpec spec, bool numeric)
    {
        int padding = spec.Width - StringElements(text).Count;
        if (padding <= 0) return text;
        char align = spec.Align != '\0' ? spec.Align : spec.Flags.Contains('-') ? '<' : spec.Flags.Contains('0') && numeric ? '=' : '>';
        if (align == '=')
        {
            char fill = spec.Align == '=' ? spec.Fill : '0';
            int sign = text.Length > 0 && text[0] is '+' or '-' or ' ' ? 1 : 0;
            if (text.Length > sign + 1 && text[sign] == '0' && text[sign + 1] is 'x' or 'X' or 'o') sign += 2;
            return text[..sign] + new string(fill, padding) + text[sign..];
        }
        int left = align switch { '<' => 0, '>' => padding, _ => padding / 2 };
        return new string(spec.Fill, left) + text + new string(spec.Fill, padding - left);
    }

    // Python's %e, %f and %g (and format()'s e, f, g) for a non-negative number.
    static string FloatFormat(double d, char type, int precision, bool alternate)
    {
        if (double.IsNaN(d)) return char.IsUpper(type) ? "NAN" : "nan";
        if (double.IsInfinity(d)) return char.IsUpper(type) ? "INF" : "inf";
        string text;
        switch (char.ToLowerInvariant(type))
        {
            case 'f':
                text = d.ToString("F" + precision, CultureInfo.InvariantCulture);
                if (alternate && precision == 0) text += ".";
                break;
            case 'e':
                text = Exponential(d, precision);
                if (alternate && precision == 0) text = text.Insert(1, ".");
                break;
            default: // g: exponential if the exponent is < -4 or >= the precision, trailing zeros dropped
            {
                int p = precision == 0 ? 1 : precision;
                string e = Exponential(d, p - 1);
                int exponent = int.Parse(e[(e.IndexOf('e') + 1)..], CultureInfo.InvariantCulture);
                text = exponent < -4 || exponent >= p ? e : d.ToString("F" + (p - 1 - exponent), CultureInfo.InvariantCulture);
                if (!alternate)
                {
                    int ePos = text.IndexOf('e');
                    string mantissa = ePos < 0 ? text : text[..ePos], rest = ePos < 0 ? "" : text[ePos..];
                    if (mantissa.Contains('.')) mantissa = mantissa.TrimEnd('0').TrimEnd('.');
                    text = mantissa + rest;
                }
                break;
            }
        }
        return char.IsUpper(type) ? text.ToUpperInvariant() : text;
    }

    // d.dddde+XX: .NET's "E" writes three exponent digits at least, Python two.
    static string Exponential(double d, int precision)
    {
        string text = d.ToString("e" + precision, CultureInfo.InvariantCulture);
        int e = text.IndexOf('e');
        int exponent = int.Parse(text[(e + 1)..], CultureInfo.InvariantCulture);
        return text[..e] + (exponent < 0 ? "e-" : "e+") + Math.Abs(exponent).ToString("00", CultureInfo.InvariantCulture);
    }

    // ---- "{} and {name:>5}".format(a, name=b) ----

    static readonly Regex BraceSpec = new(@"^(?:(?<fill>.)?(?<align>[<>^=]))?(?<sign>[-+ ])?(?<alt>\#)?(?<zero>0)?(?<width>\d+)?(?<group>[,_])?(?:\.(?<precision>\d+))?(?<type>[bcdeEfFgGnosxX%])?$",
        RegexOptions.CultureInvariant | RegexOptions.Singleline);

    /// <summary>str.format with positional ({}, {0}) and named fields, !r / !s conversions and the common format specifications.</summary>
    public static string BraceFormat(string format, IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs, int line)
    {
        var sb = new StringBuilder();
        int auto = 0;
        bool? numbering = null; // whether the positional fields are numbered automatically ({}) or by hand ({0}); one or the other
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c == '{' && i + 1 < format.Length && format[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < format.Length && format[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c == '}') throw new JinjaException("str.format(): a single '}' in the format string", line);
            if (c != '{') { sb.Append(c); continue; }
            int close = format.IndexOf('}', i);
            if (close < 0) throw new JinjaException("str.format(): a '{' is not closed", line);
            string field = format[(i + 1)..close], spec = "";
            int colon = field.IndexOf(':');
            if (colon >= 0) (field, spec) = (field[..colon], field[(colon + 1)..]);
            char conversion = '\0';
            if (field.Length >= 2 && field[^2] == '!') (field, conversion) = (field[..^2], field[^1]);
            bool automatic = field.Length == 0;
            if (automatic || char.IsAsciiDigit(field[0]))
            {
                if (numbering != null && numbering != automatic)
                    throw new JinjaException("str.format(): cannot switch between automatic ({}) and manual ({0}) field numbering", line);
                numbering = automatic;
            }
            object? value = automatic ? (auto < args.Count ? args[auto++] : throw new JinjaException("str.format(): not enough arguments", line))
                : int.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out int index) ? (index < args.Count ? args[index] : throw new JinjaException($"str.format(): no argument {index}", line))
                : kwargs.TryGetValue(field, out var named) ? named : throw new JinjaException($"str.format(): no argument '{field}'", line);
            if (conversion is 'r' or 'a') value = Repr(value);
            else if (conversion == 's') value = ToStr(value);
            sb.Append(FormatField(value, spec, line));
            i = close;
        }
        return sb.ToString();
    }

    // format(value, spec): an empty spec is str(value); otherwise [[fill]align][sign][#][0][width][.precision][type].
    static string FormatField(object? value, string spec, int line)
    {
        if (spec.Length == 0) return ToStr(value);
        var m = BraceSpec.Match(spec);
        if (!m.Success) throw new JinjaException($"str.format(): unsupported format specification '{spec}'", line);
        bool numeric = IsNumber(value);
        string flags = m.Groups["sign"].Value + m.Groups["alt"].Value;
        bool zero = m.Groups["zero"].Success;
        char align = m.Groups["align"].Success ? m.Groups["align"].Value[0] : zero && numeric ? '=' : numeric ? '>' : '<';
        char fill = m.Groups["fill"].Success ? m.Groups["fill"].Value[0] : zero ? '0' : ' ';
        var formatSpec = new FormatSpec(flags,
            m.Groups["width"].Success ? int.Parse(m.Groups["width"].Value, CultureInfo.InvariantCulture) : 0,
            m.Groups["precision"].Success ? int.Parse(m.Groups["precision"].Value, CultureInfo.InvariantCulture) : null,
            m.Groups["type"].Success ? m.Groups["type"].Value[0] : numeric ? (value is double ? 'g' : 'd') : 's', fill, align);
        if (!m.Groups["type"].Success && value is double d && formatSpec.Precision is null) // a float without type prints as str() does
            return Align((d >= 0 && !double.IsNegative(d) ? flags.Contains('+') ? "+" : flags.Contains(' ') ? " " : "" : "") + ToStr(value), formatSpec, numeric: true);
        if (formatSpec.Type == 's' && value is not string && numeric || formatSpec.Type is 'd' or 'x' or 'X' or 'o' or 'b' or 'c' && value is double)
            throw new JinjaException($"str.format(): unknown format code '{formatSpec.Type}' for a {TypeName(value)}", line);
        if (m.Groups["group"].Success) // {:,}: thousands separators in the integer digits, then the padding
        {
            string plain = FormatValue(value, formatSpec with { Width = 0 }, line);
            int start = plain.TakeWhile(c => !char.IsAsciiDigit(c)).Count(), end = start;
            while (end < plain.Length && char.IsAsciiDigit(plain[end])) end++;
            string digits = plain[start..end], grouped = "";
            for (int i = 0; i < digits.Length; i++)
                grouped += (i > 0 && (digits.Length - i) % 3 == 0 ? m.Groups["group"].Value : "") + digits[i];
            return Align(plain[..start] + grouped + plain[end..], formatSpec, numeric: true);
        }
        switch (formatSpec.Type)
        {
            case 'b':
                return Align(Signed(IntegerOf(value, 'b', allowFloat: false, line), formatSpec, v => (flags.Contains('#') ? "0b" : "") + Convert.ToString(v, 2)), formatSpec, numeric: true);
            case 'n':
                return FormatValue(value, formatSpec with { Type = value is double ? 'g' : 'd' }, line);
            case '%':
                string percent = FormatValue(ToDouble(value) * 100, formatSpec with { Type = 'f', Width = 0 }, line) + "%";
                return Align(percent, formatSpec, numeric: true);
            default:
                return FormatValue(value, formatSpec, line);
        }
    }
}
