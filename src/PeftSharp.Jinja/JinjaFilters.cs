using System.Globalization;
using System.Text.RegularExpressions;
using static PeftSharp.Jinja.JinjaValues;

namespace PeftSharp.Jinja;

/// <summary>
/// Jinja2's built-in filters (<c>x | trim</c>) and tests (<c>x is defined</c>) as chat templates use them, with
/// Jinja's argument names and defaults, and transformers' <c>tojson</c>. String filters read an undefined value
/// as "" (Jinja's soft_str), so <c>missing | trim</c> is "", while numeric ones (<c>int</c>, <c>round</c>) fail on it.
/// </summary>
internal static class JinjaFilters
{
    /// <summary>The filters <see cref="Filter"/> knows; an unknown one fails when the template is parsed (see JinjaParser).</summary>
    public static readonly HashSet<string> FilterNames =
    [
        "trim", "length", "count", "upper", "lower", "title", "capitalize", "center", "string", "safe", "e", "escape", "forceescape", "tojson",
        "default", "d", "join", "first", "last", "list", "reverse", "unique", "sort", "sum", "min", "max", "abs", "int", "float", "round",
        "replace", "items", "dictsort", "attr", "map", "select", "reject", "selectattr", "rejectattr", "indent", "wordcount", "format", "batch",
        "truncate",
    ];

    /// <summary>The tests <see cref="Test"/> knows.</summary>
    public static readonly HashSet<string> TestNames =
    [
        "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false", "mapping", "sequence", "iterable",
        "callable", "equalto", "eq", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "odd",
        "even", "divisibleby", "sameas", "lower", "upper", "escaped", "filter", "test",
    ];

    static readonly Regex Word = new(@"\w+", RegexOptions.CultureInvariant);
    static readonly Regex WordBeginning = new(@"([-\s({\[<]+)", RegexOptions.CultureInvariant);

    public static object? Filter(string name, object? input, IReadOnlyList<object?> a, IReadOnlyDictionary<string, object?> k, int line)
    {
        object? Arg(int index, string key, object? fallback) => index < a.Count ? a[index] : k.TryGetValue(key, out var v) ? v : fallback;
        string Str(object? v) => ToStr(v); // soft_str: an undefined value is ""
        bool CaseSensitive(int index) => IsTrue(Arg(index, "case_sensitive", false));
        switch (name)
        {
            case "trim":
                return JinjaStrings.Strip(Str(input), Arg(0, "chars", null) as string, start: true, end: true);
            case "length" or "count":
                return (long)Length(input, line);
            case "upper":
                return JinjaStrings.Upper(Str(input));
            case "lower":
                return JinjaStrings.Lower(Str(input));
            case "title":
                // Not str.title(): Jinja capitalises the words that follow spaces, '-' and brackets ("don't" stays "Don't").
                return string.Concat(WordBeginning.Split(Str(input)).Where(w => w.Length > 0)
                    .Select(w => StringElements(w)[0] is var first ? JinjaStrings.Upper(first) + JinjaStrings.Lower(w[first.Length..]) : w));
            case "capitalize":
                return JinjaStrings.Capitalize(Str(input));
            case "center":
                return JinjaStrings.Method(Str(input), "center", line)!.Invoke([Arg(0, "width", 80L)], k);
            case "string":
                return ToStr(input);
            case "safe":
                return input;
            case "e" or "escape" or "forceescape":
                return Str(input).Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;"); // markupsafe's escape
            case "tojson":
                return ToJson(input, line, Arg(0, "ensure_ascii", false), Arg(1, "indent", null), Arg(2, "separators", null), Arg(3, "sort_keys", false));
            case "default" or "d":
            {
                var fallback = Arg(0, "default_value", "");
                bool boolean = IsTrue(Arg(1, "boolean", false));
                return input is Undefined || (boolean && !IsTrue(input)) ? fallback : input;
            }
            case "join":
            {
                var items = Iterate(input, line);
                if (Arg(1, "attribute", null) is { } attribute) items = items.Select(AttributeGetter(attribute, line)).ToList();
                return string.Join(Str(Arg(0, "d", "")), items.Select(Str));
            }
            case "first":
            {
                var items = Iterate(input, line);
                return items.Count > 0 ? items[0] : new Undefined("the sequence is empty (filter 'first')");
            }
            case "last":
            {
                var items = Iterate(input, line);
                return items.Count > 0 ? items[^1] : new Undefined("the sequence is empty (filter 'last')");
            }
            case "list":
                return Iterate(input, line).ToList();
            case "reverse":
                return input is string text ? string.Concat(StringElements(text).AsEnumerable().Reverse()) : Iterate(input, line).AsEnumerable().Reverse().ToList();
            case "unique":
            {
                var key = AttributeGetter(Arg(1, "attribute", null), line, ignoreCase: !CaseSensitive(0));
                var result = new List<object?>();
                var seen = new List<object?>();
                foreach (var x in Iterate(input, line))
                {
                    var kx = key(x);
                    if (kx is List<object?> and not JinjaTuple or OrderedDictionary<string, object?>) // Jinja keeps a set of them
                        throw new JinjaException($"filter 'unique': a {TypeName(kx)} cannot be hashed", line);
                    if (seen.Any(y => AreEqual(kx, y))) continue;
                    seen.Add(kx);
                    result.Add(x);
                }
                return result;
            }
            case "sort":
            {
                // Jinja's key is a list of one value per comma-separated attribute (the item itself without one),
                // so equal keys are never ordered: [undefined] == [undefined].
                bool reverse = IsTrue(Arg(0, "reverse", false));
                object?[] attributes = Arg(2, "attribute", null) is string names ? names.Split(',') : [Arg(2, "attribute", null)];
                var getters = attributes.Select(attribute => AttributeGetter(attribute, line, ignoreCase: !CaseSensitive(1))).ToList();
                return SortBy(Iterate(input, line), x => getters.Select(get => get(x)).ToList(), reverse, line);
            }
            case "dictsort":
            {
                if (input is not OrderedDictionary<string, object?> dict) throw new JinjaException($"filter 'dictsort' needs a dict, got a {TypeName(input)}", line);
                int position = ToStr(Arg(1, "by", "key")) switch
                {
                    "key" => 0,
                    "value" => 1,
                    _ => throw new JinjaException("filter 'dictsort' sorts by \"key\" or \"value\"", line),
                };
                bool ignoreCase = !CaseSensitive(0);
                var pairs = dict.Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList();
                return SortBy(pairs, p => ignoreCase ? Lower(((JinjaTuple)p!)[position]) : ((JinjaTuple)p!)[position], IsTrue(Arg(2, "reverse", false)), line);
            }
            case "sum":
            {
                var items = Iterate(input, line);
                if (Arg(0, "attribute", null) is { } attribute) items = items.Select(AttributeGetter(attribute, line)).ToList();
                return items.Aggregate(Arg(1, "start", 0L), (acc, x) => JinjaBuiltins.Arithmetic("+", acc, x, line));
            }
            case "min" or "max":
            {
                var items = Iterate(input, line);
                if (items.Count == 0) return new Undefined($"no {name} of an empty sequence");
                var key = AttributeGetter(Arg(1, "attribute", null), line, ignoreCase: !CaseSensitive(0));
                // Python's min and max keep the first of equal items.
                return items.Aggregate((best, x) => Compare(key(x), key(best), line) is var c && (name == "min" ? c < 0 : c > 0) ? x : best);
            }
            case "abs":
                return input switch
                {
                    long l => l != long.MinValue ? (object)Math.Abs(l) : throw new JinjaException("integer overflow in abs()", line),
                    bool b => b ? 1L : 0L,
                    double d => Math.Abs(d),
                    _ => throw new JinjaException($"bad operand type for abs(): '{TypeName(input)}'", line),
                };
            case "int":
                return input switch
                {
                    long l => l,
                    bool b => b ? 1L : 0L,
                    double d => Truncate(d, line),
                    string s when ParseInteger(s) is long l => l,
                    string s when ParseFloat(s) is double d && !double.IsNaN(d) => Truncate(d, line),
                    Undefined u => throw new JinjaException($"{u.Hint} (filter 'int')", line),
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return input switch
                {
                    long or bool or double => ToDouble(input),
                    string s when ParseFloat(s) is double d => d,
                    Undefined u => throw new JinjaException($"{u.Hint} (filter 'float')", line),
                    _ => Arg(0, "default", 0.0),
                };
            case "round":
                return Round(input, Arg(0, "precision", 0L), ToStr(Arg(1, "method", "common")), line);
            case "replace":
                return JinjaStrings.Replace(Str(input), Str(Arg(0, "old", "")), Str(Arg(1, "new", "")), Arg(2, "count", null) is long c ? c : -1);
            case "items":
                return input is OrderedDictionary<string, object?> mapping ? mapping.Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList()
                    : input is Undefined ? [] : throw new JinjaException($"filter 'items' needs a dict, got a {TypeName(input)}", line);
            case "attr":
                return JinjaBuiltins.GetAttribute(input, Str(Arg(0, "name", "")), line);
            case "map":
            {
                var items = IsTrue(input) ? Iterate(input, line) : []; // Jinja maps and selects nothing from a false value (0, none)
                if (a.Count == 0 && k.TryGetValue("attribute", out var attribute))
                    return items.Select(AttributeGetter(attribute, line, fallback: k.GetValueOrDefault("default"))).ToList();
                if (a.Count == 0) throw new JinjaException("filter 'map' needs a filter name or attribute=", line);
                string filter = Str(a[0]);
                if (!FilterNames.Contains(filter)) throw new JinjaException($"unknown filter '{filter}'", line);
                var rest = a.Skip(1).ToList();
                return items.Select(x => Filter(filter, x, rest, k, line)).ToList();
            }
            case "select" or "reject":
                return SelectOrReject(IsTrue(input) ? Iterate(input, line) : [], x => x, a, 0, keep: name == "select", line);
            case "selectattr" or "rejectattr":
                if (a.Count == 0) throw new JinjaException($"filter '{name}' needs an attribute name", line);
                return SelectOrReject(IsTrue(input) ? Iterate(input, line) : [], AttributeGetter(a[0], line), a, 1, keep: name == "selectattr", line);
            case "indent": // Jinja appends "\n" to the value itself, so only a string works
                return Indent(input as string ?? throw new JinjaException($"filter 'indent' needs a string, got a {TypeName(input)}", line),
                    Arg(0, "width", 4L), IsTrue(Arg(1, "first", false)), IsTrue(Arg(2, "blank", false)));
            case "truncate":
                return Truncate(Str(input), ToLong(Arg(0, "length", 255L)), IsTrue(Arg(1, "killwords", false)), Str(Arg(2, "end", "...")),
                    ToLong(Arg(3, "leeway", 5L)), line);
            case "wordcount":
                return (long)Word.Matches(Str(input)).Count;
            case "format":
                if (a.Count > 0 && k.Count > 0) throw new JinjaException("filter 'format' takes positional or keyword arguments, not both", line);
                return JinjaStrings.PercentFormat(Str(input), k.Count > 0 ? ToDict(k.Select(p => (p.Key, p.Value))) : new JinjaTuple(a), line);
            case "batch":
            {
                long size = ToLong(Arg(0, "linecount", 1L));
                if (size <= 0) throw new JinjaException("filter 'batch' needs a positive size", line);
                var fill = Arg(1, "fill_with", null);
                var batches = Iterate(input, line).Chunk((int)size).Select(c => c.ToList()).ToList();
                if (fill is not null && batches.Count > 0) while (batches[^1].Count < size) batches[^1].Add(fill);
                return batches.Select(b => (object?)b).ToList();
            }
            default:
                throw new JinjaException($"unknown filter '{name}'", line);
        }
    }

    // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False): json.dumps.
    static string ToJson(object? input, int line, object? ensureAscii, object? indent, object? separators, object? sortKeys)
    {
        string? indentText = indent switch
        {
            null => null,
            long n => new string(' ', (int)Math.Max(0, n)),
            string s => s,
            _ => throw new JinjaException($"tojson: indent must be an integer or a string, got a {TypeName(indent)}", line),
        };
        string? itemSeparator = null, keySeparator = null;
        if (separators is List<object?> { Count: 2 } pair) (itemSeparator, keySeparator) = (ToStr(pair[0]), ToStr(pair[1]));
        else if (separators is not null) throw new JinjaException("tojson: separators must be an (item, key) pair", line);
        try
        {
            return JinjaValues.ToJson(input, indentText, itemSeparator, keySeparator, IsTrue(sortKeys), IsTrue(ensureAscii));
        }
        catch (JinjaException e) when (e.Line == 0)
        {
            throw new JinjaException(e.Message, line);
        }
    }

    // Jinja's truncate: longer than length + leeway is cut to length - len(end), at the last space unless killwords.
    static string Truncate(string s, long length, bool killWords, string end, long leeway, int line)
    {
        var chars = StringElements(s);
        int endLength = StringElements(end).Count;
        if (length < endLength || leeway < 0) throw new JinjaException($"filter 'truncate' needs length >= {endLength} and leeway >= 0", line);
        if (chars.Count <= length + leeway) return s;
        string kept = string.Concat(chars.Take((int)(length - endLength)));
        if (!killWords && kept.LastIndexOf(' ') is var space and >= 0) kept = kept[..space];
        return kept + end;
    }

    // sorted(items, key=key, reverse=reverse): stable, and equal items keep their order when reversed too.
    static List<object?> SortBy(List<object?> items, Func<object?, object?> key, bool reverse, int line)
    {
        var keys = items.Select(key).ToList();
        var order = Enumerable.Range(0, items.Count).ToList();
        try
        {
            order.Sort((i, j) =>
            {
                int c = Compare(keys[i], keys[j], line);
                return c != 0 ? (reverse ? -c : c) : i.CompareTo(j);
            });
        }
        catch (InvalidOperationException e) when (e.InnerException is JinjaException inner)
        {
            throw inner; // List.Sort wraps what the comparison throws
        }
        return order.Select(i => items[i]).ToList();
    }

    static object? Lower(object? value) => value is string s ? JinjaStrings.Lower(s) : value;

    /// <summary>
    /// Jinja's make_attrgetter: "name", "a.b" or "list.0" read key by key (digits as indices); with a fallback, an
    /// undefined step becomes it; ignoreCase lowers a string result (sort, unique, min, max are case-blind by default).
    /// </summary>
    static Func<object?, object?> AttributeGetter(object? attribute, int line, bool ignoreCase = false, object? fallback = null)
    {
        object?[] parts = attribute switch
        {
            null => [],
            string s => s.Split('.').Select(p => p.Length > 0 && p.All(char.IsAsciiDigit) ? (object?)long.Parse(p, CultureInfo.InvariantCulture) : p).ToArray(),
            _ => [attribute],
        };
        return item =>
        {
            foreach (var part in parts)
            {
                item = JinjaBuiltins.GetItem(item, part, line);
                if (fallback is not null && item is Undefined) item = fallback;
            }
            return ignoreCase ? Lower(item) : item;
        };
    }

    // select / reject (value: the item) and selectattr / rejectattr (value: its attribute): a test with its
    // arguments from args[testAt], or plain truth without one.
    static List<object?> SelectOrReject(List<object?> items, Func<object?, object?> value, IReadOnlyList<object?> args, int testAt, bool keep, int line)
    {
        if (args.Count <= testAt) return items.Where(x => IsTrue(value(x)) == keep).ToList();
        string test = ToStr(args[testAt]);
        if (!TestNames.Contains(test)) throw new JinjaException($"unknown test '{test}'", line);
        var rest = args.Skip(testAt + 1).ToList();
        return items.Where(x => Test(test, value(x), rest, line) == keep).ToList();
    }

    // round(value, precision, method): Python's round() (halves to even, an int stays an int) or math.ceil / floor.
    static object Round(object? value, object? precisionArg, string method, int line)
    {
        if (!IsNumber(value)) throw new JinjaException($"filter 'round' needs a number, got a {TypeName(value)}", line);
        long precision = ToLong(precisionArg);
        double factor = Math.Pow(10, precision), x = ToDouble(value) * factor;
        switch (method)
        {
            case "common":
                if (value is not double && precision >= 0) return ToLong(value);
                double rounded = Math.Round(x, MidpointRounding.ToEven) / factor;
                return value is double ? rounded : (object)(long)rounded;
            // math.ceil / floor return an int, which has no -0: ceil(-0.5) is 0, not -0.0.
            case "ceil": return (Math.Ceiling(x) + 0.0) / factor;
            case "floor": return (Math.Floor(x) + 0.0) / factor;
            default: throw new JinjaException("filter 'round' takes the method 'common', 'ceil' or 'floor'", line);
        }
    }

    // Jinja's indent: every line but the first (and the first too with first=true) gets the prefix; empty lines
    // only with blank=true (a line of spaces is not empty). Lines end where Python's splitlines() ends them.
    static string Indent(string text, object? width, bool first, bool blank)
    {
        string prefix = width as string ?? new string(' ', (int)Math.Max(0, ToLong(width)));
        var lines = ((List<object?>)JinjaStrings.Method(text + "\n", "splitlines", 0)!.Invoke([], new Dictionary<string, object?>())!).Cast<string>().ToList();
        string result = blank ? string.Join("\n" + prefix, lines)
            : lines[0] + (lines.Count > 1 ? "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? prefix + l : l)) : "");
        return first ? prefix + result : result;
    }

    // int(float): toward zero; beyond 64 bits (Python's ints have no limit) or infinite, an error.
    static long Truncate(double d, int line) => Math.Truncate(d) is var t && t >= -9.223372036854775808e18 && t < 9.223372036854775808e18 ? (long)t
        : throw new JinjaException($"the integer part of {Repr(d)} does not fit in 64 bits", line);

    // Python's int(str): surrounding whitespace, a sign, and underscores between digits are allowed.
    static long? ParseInteger(string s)
    {
        s = JinjaStrings.Strip(s, null, true, true);
        if (!Regex.IsMatch(s, @"^[+-]?\d+(_\d+)*$")) return null;
        return long.TryParse(s.Replace("_", ""), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l) ? l : null;
    }

    // Python's float(str): as int() plus a decimal point, an exponent, "inf", "infinity" and "nan".
    static double? ParseFloat(string s)
    {
        s = JinjaStrings.Strip(s, null, true, true).ToLowerInvariant();
        string unsigned = s.TrimStart('+', '-');
        if (s.Length - unsigned.Length > 1) return null;
        bool negative = s.StartsWith('-');
        if (unsigned is "inf" or "infinity") return negative ? double.NegativeInfinity : double.PositiveInfinity;
        if (unsigned == "nan") return double.NaN;
        if (!Regex.IsMatch(unsigned, @"^(?=\.?\d)(\d+(_\d+)*)?(\.(\d+(_\d+)*)?)?(e[+-]?\d+(_\d+)*)?$")) return null; // a digit first, or after the point
        return double.Parse(s.Replace("_", ""), NumberStyles.Float, CultureInfo.InvariantCulture);
    }

    // The tests that take an argument (x is divisibleby 3); the others take none.
    static readonly HashSet<string> TestsWithArgument =
        ["equalto", "eq", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "divisibleby", "sameas"];

    public static bool Test(string name, object? value, IReadOnlyList<object?> a, int line)
    {
        int expected = TestsWithArgument.Contains(name) ? 1 : 0;
        if (a.Count != expected && TestNames.Contains(name))
            throw new JinjaException($"test '{name}' takes {expected} argument{(expected == 1 ? "" : "s")}, got {a.Count}", line);
        object? Arg0() => a[0];
        return name switch
        {
            "defined" => value is not Undefined,
            "undefined" => value is Undefined,
            "none" => value is null,
            "string" => value is string,
            "number" => value is long or double or bool, // Python's bool is a number
            "integer" => value is long,
            "float" => value is double,
            "boolean" => value is bool,
            "true" => value is true,
            "false" => value is false,
            "mapping" => value is OrderedDictionary<string, object?>,
            // Undefined has a length and items (which fail), so Jinja counts it as a sequence, and as callable.
            "sequence" => value is string or List<object?> or OrderedDictionary<string, object?> or Undefined,
            "iterable" => value is string or List<object?> or OrderedDictionary<string, object?> or Undefined,
            "callable" => value is JinjaFunction or Undefined,
            "escaped" => false,
            "filter" => value is string f && FilterNames.Contains(f),
            "test" => value is string t && TestNames.Contains(t),
            "equalto" or "eq" or "==" => AreEqual(value, Arg0()),
            "ne" or "!=" => !AreEqual(value, Arg0()),
            "lt" or "lessthan" or "<" => Compare(value, Arg0(), line) < 0,
            "le" or "<=" => Compare(value, Arg0(), line) <= 0,
            "gt" or "greaterthan" or ">" => Compare(value, Arg0(), line) > 0,
            "ge" or ">=" => Compare(value, Arg0(), line) >= 0,
            "in" => JinjaBuiltins.Contains(Arg0(), value, line),
            "odd" => AreEqual(JinjaBuiltins.Arithmetic("%", value, 2L, line), 1L),
            "even" => AreEqual(JinjaBuiltins.Arithmetic("%", value, 2L, line), 0L),
            "divisibleby" => AreEqual(JinjaBuiltins.Arithmetic("%", value, Arg0(), line), 0L),
            // Python's "is": None, booleans and small integers are single objects; strings and numbers compare by value here.
            "sameas" => Arg0() is var other && (value is null or bool or long or double or string ? AreEqual(value, other) && TypeName(value) == TypeName(other) : ReferenceEquals(value, other)),
            "lower" => JinjaStrings.IsLower(ToStr(value)),
            "upper" => JinjaStrings.IsUpper(ToStr(value)),
            _ => throw new JinjaException($"unknown test '{name}'", line),
        };
    }
}
