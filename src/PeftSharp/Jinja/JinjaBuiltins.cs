using System.Globalization;
using System.Text;
using static PeftSharp.Jinja.JinjaValues;

namespace PeftSharp.Jinja;

/// <summary>
/// Jinja2's built-in filters, tests and globals that chat templates use, the Python string, dict and list
/// methods they call (<c>content.strip()</c>, <c>message.get('x')</c>), and Python's operators. Mutating
/// methods (<c>list.append</c>, <c>dict.update</c>) are absent, as in transformers' immutable sandbox.
/// </summary>
internal static class JinjaBuiltins
{
    public static IEnumerable<(string Name, object? Value)> Globals =>
    [
        ("range", new JinjaFunction("range", (a, _) => Range(a))),
        ("namespace", new JinjaFunction("namespace", (a, k) => MakeNamespace(a, k))),
        ("dict", new JinjaFunction("dict", (a, k) => ToDict((a.Count > 0 && a[0] is OrderedDictionary<string, object?> d ? d.Select(p => (p.Key, p.Value)) : [])
            .Concat(k.Select(p => (p.Key, p.Value)))))),
        ("raise_exception", new JinjaFunction("raise_exception", (a, _) => throw new JinjaRaisedException(a.Count > 0 ? ToStr(a[0]) : "", 0))),
    ];

    static List<object?> Range(IReadOnlyList<object?> a)
    {
        long start = 0, stop, step = 1;
        if (a.Count == 1) stop = Int(a[0], "range");
        else if (a.Count is 2 or 3)
        {
            start = Int(a[0], "range");
            stop = Int(a[1], "range");
            if (a.Count == 3) step = Int(a[2], "range");
        }
        else throw new JinjaException($"range() takes 1 to 3 arguments, got {a.Count}", 0);
        if (step == 0) throw new JinjaException("range() step must not be zero", 0);
        var result = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            result.Add(i);
            if (result.Count > 100_000) throw new JinjaException("range() is limited to 100000 items", 0);
        }
        return result;
    }

    static JinjaNamespace MakeNamespace(IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs)
    {
        var ns = new JinjaNamespace();
        foreach (var a in args)
            if (a is OrderedDictionary<string, object?> d) foreach (var (key, value) in d) ns.Attributes[key] = value;
        foreach (var (key, value) in kwargs) ns.Attributes[key] = value;
        return ns;
    }

    static long Int(object? v, string where) => v is long or bool ? ToLong(v) : throw new JinjaException($"{where}() needs integers, got a {TypeName(v)}", 0);

    // obj.name: a method or attribute first, then a key, as Jinja's getattr does.
    public static object? GetAttribute(object? target, string name, int line)
    {
        switch (target)
        {
            case Undefined u:
                throw new JinjaException($"{u.Hint} (reading its attribute '{name}')", line);
            case OrderedDictionary<string, object?> dict:
                if (DictMethod(dict, name) is { } method) return method;
                return dict.TryGetValue(name, out var value) ? value : new Undefined($"'dict object' has no attribute '{name}'");
            case JinjaNamespace ns:
                return ns.Attributes.TryGetValue(name, out var attribute) ? attribute : new Undefined($"the namespace has no attribute '{name}'");
            case JinjaRenderer.LoopContext loop:
                return loop.Get(name);
            case string s:
                return (object?)StringMethod(s, name, line) ?? new Undefined($"'str object' has no attribute '{name}'");
            case List<object?> list:
                return (object?)ListMethod(list, name) ?? new Undefined($"'list object' has no attribute '{name}'");
            default:
                return new Undefined($"'{TypeName(target)} object' has no attribute '{name}'");
        }
    }

    // obj[key]: a key or index first, then an attribute for string keys.
    public static object? GetItem(object? target, object? key, int line)
    {
        switch (target)
        {
            case Undefined u:
                throw new JinjaException($"{u.Hint} (reading its item {Repr(key)})", line);
            case OrderedDictionary<string, object?> dict when key is string k:
                return dict.TryGetValue(k, out var value) ? value : new Undefined($"'dict object' has no attribute '{k}'");
            case List<object?> list when key is long or bool:
            {
                long i = ToLong(key);
                if (i < 0) i += list.Count;
                return i >= 0 && i < list.Count ? list[(int)i] : new Undefined($"list index {ToLong(key)} is out of range");
            }
            case string s when key is long or bool:
            {
                var chars = StringElements(s);
                long i = ToLong(key);
                if (i < 0) i += chars.Count;
                return i >= 0 && i < chars.Count ? chars[(int)i] : new Undefined($"string index {ToLong(key)} is out of range");
            }
            default:
                if (key is string name) return GetAttribute(target, name, line);
                return new Undefined($"a {TypeName(target)} has no item {Repr(key)}");
        }
    }

    public static object? Slice(object? target, object? start, object? stop, object? step, int line)
    {
        long? Bound(object? v) => v is null ? null : v is long or bool ? ToLong(v) : throw new JinjaException($"slice indices must be integers, got a {TypeName(v)}", line);
        var indices = SliceIndices(target switch
        {
            List<object?> l => l.Count,
            string s => StringElements(s).Count,
            Undefined u => throw new JinjaException(u.Hint, line),
            _ => throw new JinjaException($"a {TypeName(target)} cannot be sliced", line),
        }, Bound(start), Bound(stop), Bound(step) ?? 1, line);
        if (target is List<object?> list) return indices.Select(i => list[i]).ToList();
        var chars = StringElements((string)target!);
        return string.Concat(indices.Select(i => chars[i]));
    }

    // Python's slice.indices: clamp, negative counts from the end, negative steps walk backwards.
    static List<int> SliceIndices(int count, long? start, long? stop, long step, int line)
    {
        if (step == 0) throw new JinjaException("slice step cannot be zero", line);
        long Clamp(long? v, long whenNull, long low, long high)
        {
            if (v is null) return whenNull;
            long x = v.Value < 0 ? v.Value + count : v.Value;
            return Math.Clamp(x, low, high);
        }
        var result = new List<int>();
        if (step > 0)
        {
            long from = Clamp(start, 0, 0, count), to = Clamp(stop, count, 0, count);
            for (long i = from; i < to; i += step) result.Add((int)i);
        }
        else
        {
            long from = Clamp(start, count - 1, -1, count - 1), to = Clamp(stop, -1, -1, count - 1);
            for (long i = from; i > to; i += step) result.Add((int)i);
        }
        return result;
    }

    public static bool Contains(object? container, object? item, int line) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal)
            : throw new JinjaException($"'in <string>' needs a string on the left, got a {TypeName(item)}", line),
        List<object?> list => list.Any(x => AreEqual(x, item)),
        OrderedDictionary<string, object?> dict => item is string k && dict.ContainsKey(k),
        JinjaNamespace ns => item is string n && ns.Attributes.ContainsKey(n),
        Undefined => false,
        _ => throw new JinjaException($"a {TypeName(container)} cannot be searched with 'in'", line),
    };

    public static object? Arithmetic(string op, object? a, object? b, int line)
    {
        if (op == "~") return ToStr(a) + ToStr(b);
        if (a is Undefined ua) throw new JinjaException(ua.Hint, line);
        if (b is Undefined ub) throw new JinjaException(ub.Hint, line);
        if (IsNumber(a) && IsNumber(b))
        {
            bool floating = a is double || b is double;
            double x = ToDouble(a), y = ToDouble(b);
            long i = ToLong(a), j = ToLong(b);
            switch (op)
            {
                case "+": return floating ? (object)(x + y) : i + j;
                case "-": return floating ? (object)(x - y) : i - j;
                case "*": return floating ? (object)(x * y) : i * j;
                case "/":
                    if (y == 0) throw new JinjaException("division by zero", line);
                    return x / y;
                case "//":
                    if (y == 0) throw new JinjaException("integer division by zero", line);
                    return floating ? (object)Math.Floor(x / y) : FloorDiv(i, j);
                case "%":
                    if (y == 0) throw new JinjaException("modulo by zero", line);
                    return floating ? (object)(x - y * Math.Floor(x / y)) : i - j * FloorDiv(i, j);
                case "**":
                    return !floating && j >= 0 ? (object)(long)Math.Pow(i, j) : Math.Pow(x, y);
            }
        }
        if (op == "+" && a is string sa && b is string sb) return sa + sb;
        if (op == "+" && a is List<object?> la && b is List<object?> lb) return la.Concat(lb).ToList();
        if (op == "*" && (a is string || b is string) && (a is long || b is long))
        {
            string s = a as string ?? (string)b!;
            long n = a is long ? (long)a : (long)b!;
            return n <= 0 ? "" : string.Concat(Enumerable.Repeat(s, (int)n));
        }
        if (op == "*" && (a is List<object?> || b is List<object?>) && (a is long || b is long))
        {
            var l = a as List<object?> ?? (List<object?>)b!;
            long n = a is long ? (long)a : (long)b!;
            return Enumerable.Range(0, (int)Math.Max(0, n)).SelectMany(_ => l).ToList();
        }
        if (op == "%" && a is string format) return PercentFormat(format, b, line);
        throw new JinjaException($"unsupported operand types for {op}: '{TypeName(a)}' and '{TypeName(b)}'", line);
    }

    static long FloorDiv(long i, long j)
    {
        long q = i / j;
        return (i % j != 0 && (i < 0) != (j < 0)) ? q - 1 : q;
    }

    // "%s and %d" % (a, b): the printf-style formatting Python applies to strings.
    static string PercentFormat(string format, object? args, int line)
    {
        var values = args is List<object?> l ? l : [args];
        var sb = new StringBuilder();
        int next = 0;
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length) { sb.Append(format[i]); continue; }
            char spec = format[++i];
            if (spec == '%') { sb.Append('%'); continue; }
            if (next >= values.Count) throw new JinjaException("not enough arguments for format string", line);
            var v = values[next++];
            sb.Append(spec switch
            {
                's' => ToStr(v),
                'r' => Repr(v),
                'd' or 'i' => ToLong(v).ToString(CultureInfo.InvariantCulture),
                'f' => ToDouble(v).ToString("F6", CultureInfo.InvariantCulture),
                _ => throw new JinjaException($"unsupported format character '{spec}'", line),
            });
        }
        return sb.ToString();
    }

    static JinjaFunction? DictMethod(OrderedDictionary<string, object?> dict, string name) => name switch
    {
        "items" => new JinjaFunction("dict.items", (_, _) => dict.Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList()),
        "keys" => new JinjaFunction("dict.keys", (_, _) => dict.Keys.Cast<object?>().ToList()),
        "values" => new JinjaFunction("dict.values", (_, _) => dict.Values.ToList()),
        "get" => new JinjaFunction("dict.get", (a, _) =>
            a.Count > 0 && a[0] is string k && dict.TryGetValue(k, out var v) ? v : a.Count > 1 ? a[1] : null),
        _ => null,
    };

    static JinjaFunction? ListMethod(List<object?> list, string name) => name switch
    {
        "index" => new JinjaFunction("list.index", (a, _) =>
        {
            int i = list.FindIndex(x => AreEqual(x, a.Count > 0 ? a[0] : null));
            return i >= 0 ? (long)i : throw new JinjaException($"{Repr(a.Count > 0 ? a[0] : null)} is not in the list", 0);
        }),
        "count" => new JinjaFunction("list.count", (a, _) => (long)list.Count(x => AreEqual(x, a.Count > 0 ? a[0] : null))),
        _ => null,
    };

    static JinjaFunction? StringMethod(string s, string name, int line)
    {
        string Arg(IReadOnlyList<object?> a, int i, string method) =>
            i < a.Count && a[i] is string x ? x : throw new JinjaException($"str.{method}() needs a string argument", line);
        string? Chars(IReadOnlyList<object?> a) => a.Count > 0 && a[0] is string c ? c : null;
        return name switch
        {
            "strip" => new("str.strip", (a, _) => Chars(a) is { } c ? s.Trim(c.ToCharArray()) : PyStrip(s, true, true)),
            "lstrip" => new("str.lstrip", (a, _) => Chars(a) is { } c ? s.TrimStart(c.ToCharArray()) : PyStrip(s, true, false)),
            "rstrip" => new("str.rstrip", (a, _) => Chars(a) is { } c ? s.TrimEnd(c.ToCharArray()) : PyStrip(s, false, true)),
            "upper" => new("str.upper", (_, _) => s.ToUpperInvariant()),
            "lower" => new("str.lower", (_, _) => s.ToLowerInvariant()),
            "title" => new("str.title", (_, _) => Title(s)),
            "capitalize" => new("str.capitalize", (_, _) => Capitalize(s)),
            "startswith" => new("str.startswith", (a, _) => Affixes(a, "startswith", line).Any(p => s.StartsWith(p, StringComparison.Ordinal))),
            "endswith" => new("str.endswith", (a, _) => Affixes(a, "endswith", line).Any(p => s.EndsWith(p, StringComparison.Ordinal))),
            "split" => new("str.split", (a, k) => Split(s, a.Count > 0 ? a[0] : k.GetValueOrDefault("sep"),
                a.Count > 1 ? ToLong(a[1]) : k.TryGetValue("maxsplit", out var m) ? ToLong(m) : -1, line)),
            "splitlines" => new("str.splitlines", (_, _) => s.Split('\n').Select(x => (object?)x.TrimEnd('\r')).ToList() is var lines && s.EndsWith('\n') ? lines[..^1] : lines),
            "replace" => new("str.replace", (a, _) => Replace(s, Arg(a, 0, "replace"), Arg(a, 1, "replace"), a.Count > 2 ? ToLong(a[2]) : -1)),
            "find" => new("str.find", (a, _) => (long)s.IndexOf(Arg(a, 0, "find"), StringComparison.Ordinal)),
            "rfind" => new("str.rfind", (a, _) => (long)s.LastIndexOf(Arg(a, 0, "rfind"), StringComparison.Ordinal)),
            "count" => new("str.count", (a, _) => CountOccurrences(s, Arg(a, 0, "count"))),
            "join" => new("str.join", (a, _) => string.Join(s, Iterate(a.Count > 0 ? a[0] : null, line).Select(ToStr))),
            "removeprefix" => new("str.removeprefix", (a, _) => s.StartsWith(Arg(a, 0, "removeprefix"), StringComparison.Ordinal) ? s[Arg(a, 0, "removeprefix").Length..] : s),
            "removesuffix" => new("str.removesuffix", (a, _) => s.EndsWith(Arg(a, 0, "removesuffix"), StringComparison.Ordinal) ? s[..^Arg(a, 0, "removesuffix").Length] : s),
            "isdigit" => new("str.isdigit", (_, _) => s.Length > 0 && s.All(char.IsDigit)),
            "isspace" => new("str.isspace", (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace)),
            "isalpha" => new("str.isalpha", (_, _) => s.Length > 0 && s.All(char.IsLetter)),
            "format" => new("str.format", (a, k) => BraceFormat(s, a, k, line)),
            _ => null,
        };
    }

    static IEnumerable<string> Affixes(IReadOnlyList<object?> a, string method, int line) => a.Count > 0 ? a[0] switch
    {
        string p => [p],
        List<object?> l => l.Select(x => x as string ?? throw new JinjaException($"str.{method}() needs strings", line)),
        _ => throw new JinjaException($"str.{method}() needs a string or a tuple of strings", line),
    } : throw new JinjaException($"str.{method}() needs an argument", line);

    // Python's str.strip() with no argument strips Unicode whitespace (as C#'s Trim does).
    static string PyStrip(string s, bool start, bool end) => start && end ? s.Trim() : start ? s.TrimStart() : s.TrimEnd();

    static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (char c in s)
        {
            sb.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = char.IsLetter(c);
        }
        return sb.ToString();
    }

    static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    static List<object?> Split(string s, object? separator, long maxSplit, int line)
    {
        var parts = new List<object?>();
        if (separator is null)
        {
            // No separator: runs of whitespace, leading and trailing whitespace ignored.
            int i = 0;
            while (i < s.Length)
            {
                while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
                if (i >= s.Length) break;
                if (maxSplit >= 0 && parts.Count == maxSplit) { parts.Add(s[i..].TrimEnd()); break; }
                int start = i;
                while (i < s.Length && !char.IsWhiteSpace(s[i])) i++;
                parts.Add(s[start..i]);
            }
            return parts;
        }
        if (separator is not string sep || sep.Length == 0) throw new JinjaException("str.split() needs a non-empty string separator", line);
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

    static string Replace(string s, string old, string replacement, long count)
    {
        if (count < 0) return old.Length == 0 ? string.Join(replacement, ["", .. StringElements(s), ""]) : s.Replace(old, replacement, StringComparison.Ordinal);
        var sb = new StringBuilder();
        int from = 0;
        for (long n = 0; n < count; n++)
        {
            int at = s.IndexOf(old, from, StringComparison.Ordinal);
            if (at < 0 || old.Length == 0) break;
            sb.Append(s, from, at - from).Append(replacement);
            from = at + old.Length;
        }
        return sb.Append(s, from, s.Length - from).ToString();
    }

    static long CountOccurrences(string s, string sub)
    {
        if (sub.Length == 0) return StringElements(s).Count + 1;
        long n = 0;
        for (int at = s.IndexOf(sub, StringComparison.Ordinal); at >= 0; at = s.IndexOf(sub, at + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    // "{} and {name}".format(a, name=b), without format specifications beyond the field.
    static string BraceFormat(string format, IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs, int line)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c == '{' && i + 1 < format.Length && format[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < format.Length && format[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c != '{') { sb.Append(c); continue; }
            int close = format.IndexOf('}', i);
            if (close < 0) throw new JinjaException("str.format(): a '{' is not closed", line);
            string field = format[(i + 1)..close].Split(':')[0];
            object? value = field.Length == 0 ? (auto < args.Count ? args[auto++] : throw new JinjaException("str.format(): not enough arguments", line))
                : int.TryParse(field, out int index) ? (index < args.Count ? args[index] : throw new JinjaException($"str.format(): no argument {index}", line))
                : kwargs.TryGetValue(field, out var named) ? named : throw new JinjaException($"str.format(): no argument '{field}'", line);
            sb.Append(ToStr(value));
            i = close;
        }
        return sb.ToString();
    }

    /// <summary>Filter names <see cref="Filter"/> knows; like Jinja, an unknown one is an error when the template is parsed.</summary>
    public static readonly HashSet<string> FilterNames =
    [
        "trim", "length", "count", "upper", "lower", "title", "capitalize", "string", "safe", "e", "escape", "forceescape", "tojson",
        "default", "d", "join", "first", "last", "list", "reverse", "unique", "sort", "sum", "min", "max", "abs", "int", "float", "round",
        "replace", "items", "dictsort", "attr", "map", "select", "reject", "selectattr", "rejectattr", "indent", "wordcount", "format", "batch",
    ];

    /// <summary>Test names <see cref="Test"/> knows.</summary>
    public static readonly HashSet<string> TestNames =
    [
        "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false", "mapping", "sequence", "iterable",
        "callable", "equalto", "eq", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "odd",
        "even", "divisibleby", "sameas", "lower", "upper",
    ];

    public static object? Filter(string name, object? input, IReadOnlyList<object?> a, IReadOnlyDictionary<string, object?> k, int line)
    {
        object? Arg(int index, string key, object? fallback) => index < a.Count ? a[index] : k.TryGetValue(key, out var v) ? v : fallback;
        string Str(object? v) => v is Undefined u ? throw new JinjaException($"{u.Hint} (filter '{name}')", line) : ToStr(v);
        switch (name)
        {
            case "trim":
                return Arg(0, "chars", null) is string chars ? Str(input).Trim(chars.ToCharArray()) : Str(input).Trim();
            case "length" or "count":
                return (long)Length(input, line);
            case "upper":
                return Str(input).ToUpperInvariant();
            case "lower":
                return Str(input).ToLowerInvariant();
            case "title":
                return Title(Str(input));
            case "capitalize":
                return Capitalize(Str(input));
            case "string":
                return ToStr(input);
            case "safe":
                return input;
            case "e" or "escape" or "forceescape":
                return ToStr(input).Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;"); // markupsafe's escape
            case "tojson":
            {
                var indent = Arg(0, "indent", null);
                string? itemSep = null, keySep = null;
                if (k.TryGetValue("separators", out var seps) && seps is List<object?> { Count: 2 } pair) (itemSep, keySep) = (ToStr(pair[0]), ToStr(pair[1]));
                return ToJson(input, indent is long n ? (int)n : null, itemSep, keySep, IsTrue(k.GetValueOrDefault("sort_keys")));
            }
            case "default" or "d":
            {
                var fallback = Arg(0, "default_value", "");
                bool boolean = IsTrue(Arg(1, "boolean", false));
                return input is Undefined || (boolean && !IsTrue(input)) ? fallback : input;
            }
            case "join":
            {
                string separator = ToStr(Arg(0, "d", ""));
                var items = Iterate(input, line);
                if (Arg(1, "attribute", null) is string attribute) items = items.Select(x => GetItem(x, attribute, line)).ToList();
                return string.Join(separator, items.Select(ToStr));
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
                var result = new List<object?>();
                foreach (var x in Iterate(input, line)) if (!result.Any(y => AreEqual(x, y))) result.Add(x);
                return result;
            }
            case "sort":
            {
                bool reverse = IsTrue(Arg(0, "reverse", false));
                var attribute = Arg(2, "attribute", null) as string;
                var items = Iterate(input, line).ToList();
                var keys = items.Select(x => attribute is null ? x : GetItem(x, attribute, line)).ToList();
                var order = Enumerable.Range(0, items.Count).ToList();
                order.Sort((i, j) => { int c = Compare(keys[i], keys[j], line); return c != 0 ? c : i.CompareTo(j); });
                if (reverse) order.Reverse();
                return order.Select(i => items[i]).ToList();
            }
            case "sum":
                return Iterate(input, line).Aggregate((object?)0L, (acc, x) => Arithmetic("+", acc, x, line));
            case "min" or "max":
            {
                var items = Iterate(input, line);
                if (items.Count == 0) return new Undefined($"no {name} of an empty sequence");
                return items.Aggregate((x, y) => Compare(x, y, line) <= 0 == (name == "min") ? x : y);
            }
            case "abs":
                return input switch { long l => (object)Math.Abs(l), double d => Math.Abs(d), _ => throw new JinjaException($"abs of a {TypeName(input)}", line) };
            case "int":
                return input switch
                {
                    long l => l,
                    bool b => b ? 1L : 0L,
                    double d => (long)d,
                    string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) => l,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => (long)d,
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return input switch
                {
                    long or bool or double => ToDouble(input),
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
                    _ => Arg(0, "default", 0.0),
                };
            case "round":
            {
                long precision = ToLong(Arg(0, "precision", 0L));
                string method = ToStr(Arg(1, "method", "common"));
                double factor = Math.Pow(10, precision), x = ToDouble(input) * factor;
                x = method switch { "ceil" => Math.Ceiling(x), "floor" => Math.Floor(x), _ => Math.Round(x, MidpointRounding.ToEven) }; // Python rounds halves to even
                return x / factor;
            }
            case "replace":
                return Replace(Str(input), Str(Arg(0, "old", "")), Str(Arg(1, "new", "")), Arg(2, "count", null) is long c ? c : -1);
            case "items":
                return input is OrderedDictionary<string, object?> dict ? dict.Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList()
                    : input is Undefined ? [] : throw new JinjaException($"filter 'items' needs a dict, got a {TypeName(input)}", line);
            case "dictsort":
                return input is OrderedDictionary<string, object?> sorted
                    ? sorted.OrderBy(p => p.Key, StringComparer.OrdinalIgnoreCase).Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList()
                    : throw new JinjaException($"filter 'dictsort' needs a dict, got a {TypeName(input)}", line);
            case "attr":
                return GetAttribute(input, Str(Arg(0, "name", "")), line);
            case "map":
            {
                var items = Iterate(input, line);
                if (k.TryGetValue("attribute", out var attributeName))
                {
                    var fallback = k.TryGetValue("default", out var dv) ? dv : null;
                    return items.Select(x => GetItem(x, attributeName, line) is Undefined && k.ContainsKey("default") ? fallback : GetItem(x, attributeName, line)).ToList();
                }
                if (a.Count == 0) throw new JinjaException("filter 'map' needs a filter name or attribute=", line);
                string filter = Str(a[0]);
                var rest = a.Skip(1).ToList();
                return items.Select(x => Filter(filter, x, rest, new Dictionary<string, object?>(), line)).ToList();
            }
            case "select" or "reject":
            {
                bool keep = name == "select";
                var items = Iterate(input, line);
                if (a.Count == 0) return items.Where(x => IsTrue(x) == keep).ToList();
                string test = Str(a[0]);
                var rest = a.Skip(1).ToList();
                return items.Where(x => Test(test, x, rest, line) == keep).ToList();
            }
            case "selectattr" or "rejectattr":
            {
                bool keep = name == "selectattr";
                var items = Iterate(input, line);
                if (a.Count == 0) throw new JinjaException($"filter '{name}' needs an attribute name", line);
                string attribute = Str(a[0]);
                var rest = a.Skip(2).ToList();
                return items.Where(x =>
                {
                    var value = GetItem(x, attribute, line);
                    return (a.Count > 1 ? Test(Str(a[1]), value, rest, line) : IsTrue(value)) == keep;
                }).ToList();
            }
            case "indent":
            {
                var width = Arg(0, "width", 4L);
                string pad = width is string w ? w : new string(' ', (int)ToLong(width));
                bool first = IsTrue(Arg(1, "first", false)), blank = IsTrue(Arg(2, "blank", false));
                var lines = Str(input).Split('\n');
                for (int i = 0; i < lines.Length; i++)
                    if ((i > 0 || first) && (blank || lines[i].Trim().Length > 0)) lines[i] = pad + lines[i];
                return string.Join('\n', lines);
            }
            case "wordcount":
                return (long)Split(Str(input), null, -1, line).Count;
            case "format":
                return PercentFormat(Str(input), a.ToList(), line);
            case "batch":
            {
                long size = ToLong(Arg(0, "linecount", 1L));
                if (size <= 0) throw new JinjaException("filter 'batch' needs a positive size", line);
                return Iterate(input, line).Chunk((int)size).Select(c => (object?)c.ToList()).ToList();
            }
            default:
                throw new JinjaException($"unknown filter '{name}'", line);
        }
    }

    public static bool Test(string name, object? value, IReadOnlyList<object?> a, int line)
    {
        object? Arg0() => a.Count > 0 ? a[0] : throw new JinjaException($"test '{name}' needs an argument", line);
        return name switch
        {
            "defined" => value is not Undefined,
            "undefined" => value is Undefined,
            "none" => value is null,
            "string" => value is string,
            "number" => value is long or double,
            "integer" => value is long,
            "float" => value is double,
            "boolean" => value is bool,
            "true" => value is true,
            "false" => value is false,
            "mapping" => value is OrderedDictionary<string, object?> or JinjaNamespace,
            "sequence" => value is string or List<object?> or OrderedDictionary<string, object?>,
            "iterable" => value is string or List<object?> or OrderedDictionary<string, object?> or Undefined,
            "callable" => value is JinjaFunction,
            "equalto" or "eq" or "==" => AreEqual(value, Arg0()),
            "ne" or "!=" => !AreEqual(value, Arg0()),
            "lt" or "lessthan" or "<" => Compare(value, Arg0(), line) < 0,
            "le" or "<=" => Compare(value, Arg0(), line) <= 0,
            "gt" or "greaterthan" or ">" => Compare(value, Arg0(), line) > 0,
            "ge" or ">=" => Compare(value, Arg0(), line) >= 0,
            "in" => Contains(Arg0(), value, line),
            "odd" => ToLong(value) % 2 != 0,
            "even" => ToLong(value) % 2 == 0,
            "divisibleby" => ToLong(Arg0()) != 0 && ToLong(value) % ToLong(Arg0()) == 0,
            "sameas" => ReferenceEquals(value, Arg0()) || (value is null && Arg0() is null) || (value is bool b && Arg0() is bool c && b == c),
            "lower" => value is string s && s == s.ToLowerInvariant(),
            "upper" => value is string u && u == u.ToUpperInvariant(),
            _ => throw new JinjaException($"unknown test '{name}'", line),
        };
    }
}
