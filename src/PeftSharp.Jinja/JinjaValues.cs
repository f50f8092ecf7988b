using System.Globalization;
using System.Text;
using System.Text.Json;

namespace PeftSharp.Jinja;

/// <summary>
/// A value Jinja could not find (a missing variable, key or attribute). As in Jinja2's default <c>Undefined</c>:
/// prints as "", is false, iterates as empty, has length 0, and is an error to index, call or do arithmetic with.
/// </summary>
public sealed class Undefined
{
    /// <summary>What was looked up and not found, for error messages.</summary>
    public string Hint { get; }
    internal Undefined(string hint) => Hint = hint;
}

/// <summary>A callable value: a global function, a macro, or a bound method such as <c>message.content.strip</c>.</summary>
public sealed class JinjaFunction(string name, Func<IReadOnlyList<object?>, IReadOnlyDictionary<string, object?>, object?> invoke)
{
    /// <summary>The name errors and <c>repr</c> use.</summary>
    public string Name { get; } = name;
    /// <summary>Calls it with positional <paramref name="args"/> and keyword <paramref name="kwargs"/>.</summary>
    public object? Invoke(IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs) => invoke(args, kwargs);
}

/// <summary>A Python tuple: a list that prints as (a, b). <c>dict.items()</c> yields these.</summary>
public sealed class JinjaTuple : List<object?>
{
    /// <summary>A tuple of <paramref name="items"/>, in order.</summary>
    public JinjaTuple(IEnumerable<object?> items) : base(items) { }
}

/// <summary>What <c>namespace(...)</c> makes: attributes that <c>{% set ns.x = … %}</c> may change from inside a loop.</summary>
public sealed class JinjaNamespace
{
    /// <summary>The attributes by name, in the order they were first set.</summary>
    public OrderedDictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>
/// The values templates work with and Python's rules for them: None is <c>null</c>, integers <see cref="long"/>,
/// floats <see cref="double"/>, lists <see cref="List{T}"/> of object, dicts <see cref="OrderedDictionary{TKey,TValue}"/>
/// with string keys, plus <see cref="Undefined"/>, <see cref="JinjaNamespace"/> and <see cref="JinjaFunction"/>.
/// </summary>
public static class JinjaValues
{
    /// <summary>Converts parsed JSON (messages, tools) into template values, keeping key order.</summary>
    public static object? FromJson(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => ToDict(element.EnumerateObject().Select(p => (p.Name, FromJson(p.Value)))),
        JsonValueKind.Array => element.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => element.GetString(),
        JsonValueKind.Number => element.TryGetInt64(out long l) ? (object)l : element.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    /// <summary>A template dict of <paramref name="items"/> in order (a later duplicate key replaces the value).</summary>
    public static OrderedDictionary<string, object?> ToDict(IEnumerable<(string Key, object? Value)> items)
    {
        var dict = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (key, value) in items) dict[key] = value;
        return dict;
    }

    /// <summary>Python's truth value: None, Undefined, false, 0, 0.0 and empty strings, lists and dicts are false.</summary>
    public static bool IsTrue(object? value) => value switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> list => list.Count > 0,
        OrderedDictionary<string, object?> dict => dict.Count > 0,
        _ => true,
    };

    /// <summary>Python's <c>str()</c>, which is how <c>{{ value }}</c> prints (Undefined prints nothing).</summary>
    public static string ToStr(object? value) => value switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(value),
    };

    /// <summary>Python's <c>repr()</c>: strings quoted, None, True/False, [a, b], {'k': v}.</summary>
    public static string Repr(object? value) => value switch
    {
        null => "None",
        Undefined => "Undefined", // as an item of a printed list: [Undefined]
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        string s => StringRepr(s),
        JinjaTuple tuple => "(" + string.Join(", ", tuple.Select(Repr)) + (tuple.Count == 1 ? ",)" : ")"),
        List<object?> list => "[" + string.Join(", ", list.Select(Repr)) + "]",
        OrderedDictionary<string, object?> dict => "{" + string.Join(", ", dict.Select(p => StringRepr(p.Key) + ": " + Repr(p.Value))) + "}",
        JinjaNamespace ns => "<Namespace " + Repr(ToDict(ns.Attributes.Select(p => (p.Key, p.Value)))) + ">",
        JinjaFunction f => $"<function {f.Name}>",
        _ => value.ToString() ?? "",
    };

    // Python's float repr: the shortest digits that round-trip, in exponent form below 1e-4 and from 1e16.
    static string FloatRepr(double d) =>
        double.IsNaN(d) ? "nan" : double.IsInfinity(d) ? (d > 0 ? "inf" : "-inf") : PythonLiterals.FloatRepr(d); // repr(float) is json.dumps' for finite values

    static string StringRepr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(quote);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == quote) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append(quote).ToString();
    }

    /// <summary>
    /// Python's <c>json.dumps(value, ensure_ascii=…, indent=indent, separators=…, sort_keys=…)</c>, which is
    /// transformers' <c>tojson</c> filter for chat templates (Jinja's own escapes HTML characters; transformers' does not).
    /// <paramref name="indent"/> is the text one level indents by (json.dumps' indent=2 is "  "), or null for one line.
    /// </summary>
    public static string ToJson(object? value, string? indent = null, string? itemSeparator = null, string? keySeparator = null,
        bool sortKeys = false, bool ensureAscii = false)
    {
        var sb = new StringBuilder();
        var options = new JsonOptions(indent, itemSeparator ?? (indent is null ? ", " : ","), keySeparator ?? ": ", sortKeys, ensureAscii);
        WriteJson(sb, value, options, 0);
        return sb.ToString();
    }

    sealed record JsonOptions(string? Indent, string ItemSeparator, string KeySeparator, bool SortKeys, bool EnsureAscii);

    static void WriteJson(StringBuilder sb, object? value, JsonOptions options, int level)
    {
        switch (value)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d)); break;
            case string s: PythonLiterals.WriteString(sb, s, options.EnsureAscii); break;
            case List<object?> list:
                WriteJsonContainer(sb, '[', ']', list.Count, options, level, i => WriteJson(sb, list[i], options, level + 1));
                break;
            case OrderedDictionary<string, object?> dict:
            {
                var pairs = options.SortKeys ? dict.OrderBy(p => p.Key, StringComparer.Ordinal).ToList() : dict.ToList();
                WriteJsonContainer(sb, '{', '}', pairs.Count, options, level, i =>
                {
                    PythonLiterals.WriteString(sb, pairs[i].Key, options.EnsureAscii);
                    sb.Append(options.KeySeparator);
                    WriteJson(sb, pairs[i].Value, options, level + 1);
                });
                break;
            }
            case Undefined u: throw new JinjaException($"{u.Hint}: an undefined value cannot be written as JSON", 0);
            default: throw new JinjaException($"a {TypeName(value)} cannot be written as JSON", 0);
        }
    }

    static void WriteJsonContainer(StringBuilder sb, char open, char close, int count, JsonOptions options, int level, Action<int> writeItem)
    {
        sb.Append(open);
        if (count == 0) { sb.Append(close); return; }
        for (int i = 0; i < count; i++)
        {
            if (i > 0) sb.Append(options.ItemSeparator);
            if (options.Indent is { } indent) sb.Append('\n').Insert(sb.Length, indent, level + 1);
            writeItem(i);
        }
        if (options.Indent is { } outer) sb.Append('\n').Insert(sb.Length, outer, level);
        sb.Append(close);
    }

    // ensure_ascii writes every character from U+007F up as \uXXXX (UTF-16 units, so a surrogate pair is two).
    /// <summary>Python's <c>==</c>: 1 == 1.0 == True, lists and dicts by content, a tuple never equal to a list.</summary>
    public static bool AreEqual(object? a, object? b)
    {
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (a is null || b is null) return a is null && b is null;
        if (IsNumber(a) && IsNumber(b)) return a is double || b is double ? ToDouble(a) == ToDouble(b) : ToLong(a) == ToLong(b);
        if (a is string sa && b is string sb) return sa == sb;
        if (a is List<object?> la && b is List<object?> lb)
            return (a is JinjaTuple) == (b is JinjaTuple) && la.Count == lb.Count && la.Zip(lb).All(p => AreEqual(p.First, p.Second));
        if (a is OrderedDictionary<string, object?> da && b is OrderedDictionary<string, object?> db)
            return da.Count == db.Count && da.All(p => db.TryGetValue(p.Key, out var v) && AreEqual(p.Value, v));
        return ReferenceEquals(a, b);
    }

    /// <summary>Python's ordering for numbers, strings (by code point), lists and tuples.</summary>
    public static int Compare(object? a, object? b, int line)
    {
        if (IsNumber(a) && IsNumber(b)) return a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : ToLong(a).CompareTo(ToLong(b));
        if (a is string sa && b is string sb) return CompareCodePoints(sa, sb);
        if (a is List<object?> la && b is List<object?> lb && (a is JinjaTuple) == (b is JinjaTuple)) // a tuple and a list do not compare
        {
            for (int i = 0; i < Math.Min(la.Count, lb.Count); i++)
                if (!AreEqual(la[i], lb[i])) return Compare(la[i], lb[i], line);
            return la.Count.CompareTo(lb.Count);
        }
        throw new JinjaException($"cannot compare a {TypeName(a)} with a {TypeName(b)}", line);
    }

    // Python orders strings by code point; UTF-16 order differs only where a surrogate pair meets U+E000–U+FFFF.
    static int CompareCodePoints(string a, string b)
    {
        int i = 0;
        while (i < a.Length && i < b.Length && a[i] == b[i]) i++;
        if (i == a.Length || i == b.Length) return a.Length.CompareTo(b.Length);
        return Rune.GetRuneAt(a, char.IsLowSurrogate(a[i]) ? i - 1 : i).Value.CompareTo(Rune.GetRuneAt(b, char.IsLowSurrogate(b[i]) ? i - 1 : i).Value);
    }

    /// <summary>Whether <paramref name="v"/> takes part in arithmetic as a number (int, float, or bool as in Python).</summary>
    public static bool IsNumber(object? v) => v is long or double or bool;
    /// <summary>The integer value of a number (floats truncated toward zero, bools 0 or 1); 0 for anything else.</summary>
    public static long ToLong(object? v) => v switch { long l => l, bool b => b ? 1 : 0, double d => (long)d, _ => 0 };
    /// <summary>The float value of a number (bools 0 or 1); 0 for anything else.</summary>
    public static double ToDouble(object? v) => v switch { long l => l, bool b => b ? 1 : 0, double d => d, _ => 0 };

    /// <summary>Python's type name, for error messages.</summary>
    public static string TypeName(object? v) => v switch
    {
        null => "None",
        Undefined => "undefined value",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        JinjaTuple => "tuple",
        List<object?> => "list",
        OrderedDictionary<string, object?> => "dict",
        JinjaNamespace => "namespace",
        JinjaFunction => "function",
        _ => v.GetType().Name,
    };

    /// <summary>The items of a list, the keys of a dict or the characters of a string; Undefined is empty.</summary>
    public static List<object?> Iterate(object? value, int line) => value switch
    {
        List<object?> list => list,
        OrderedDictionary<string, object?> dict => dict.Keys.Cast<object?>().ToList(),
        string s => StringElements(s).Cast<object?>().ToList(),
        Undefined => [],
        _ => throw new JinjaException($"a {TypeName(value)} cannot be iterated over", line),
    };

    /// <summary>The characters of a string as Python sees them (code points, not UTF-16 halves).</summary>
    public static List<string> StringElements(string s)
    {
        var result = new List<string>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { result.Add(s.Substring(i, 2)); i++; }
            else result.Add(s[i].ToString());
        }
        return result;
    }

    /// <summary>Python's <c>len</c>: code points of a string, items of a list or dict; Undefined is 0.</summary>
    /// <exception cref="JinjaException">The value has no length (reported at <paramref name="line"/>).</exception>
    public static int Length(object? value, int line) => value switch
    {
        string s => StringElements(s).Count,
        List<object?> list => list.Count,
        OrderedDictionary<string, object?> dict => dict.Count,
        Undefined => 0,
        _ => throw new JinjaException($"a {TypeName(value)} has no length", line),
    };
}
