using System.Globalization;
using System.Text;
using static PeftSharp.Jinja.JinjaValues;

namespace PeftSharp.Jinja;

/// <summary>
/// Jinja2's globals, how it reads attributes and items (<c>message.content</c>, <c>messages[-1]</c>, slices), the
/// dict and list methods templates call (<c>message.get('x')</c>), and Python's operators. Mutating methods
/// (<c>list.append</c>, <c>dict.update</c>) are absent, as in transformers' immutable sandbox. String methods
/// are in <see cref="JinjaStrings"/>, filters and tests in <see cref="JinjaFilters"/>.
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
        // joiner(sep): a function that returns "" the first time and sep after that
        ("joiner", new JinjaFunction("joiner", (a, _) =>
        {
            string separator = a.Count > 0 ? ToStr(a[0]) : ", ";
            bool used = false;
            return new JinjaFunction("joiner", (_, _) =>
            {
                if (used) return separator;
                used = true;
                return "";
            });
        })),
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
                return (object?)JinjaStrings.Method(s, name, line) ?? new Undefined($"'str object' has no attribute '{name}'");
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
        // Unlike x[key], Jinja compiles x[a:b] to Python's own slicing, so a bad slice is an error, not undefined.
        if (target is Undefined u) throw new JinjaException(u.Hint, line);
        if (target is not (List<object?> or string)) throw new JinjaException($"a {TypeName(target)} cannot be sliced", line);
        long? Bound(object? v) => v is null ? null : v is long or bool ? ToLong(v) : throw new JinjaException($"slice indices must be integers, got a {TypeName(v)}", line);
        var elements = target as List<object?> ?? StringElements((string)target).Cast<object?>().ToList();
        var picked = SliceIndices(elements.Count, Bound(start), Bound(stop), Bound(step) ?? 1, line).Select(i => elements[i]);
        return target switch
        {
            JinjaTuple => new JinjaTuple(picked),
            List<object?> => picked.ToList(),
            _ => string.Concat(picked),
        };
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
        OrderedDictionary<string, object?> dict => item is List<object?> and not JinjaTuple or OrderedDictionary<string, object?>
            ? throw new JinjaException($"a {TypeName(item)} cannot be a dict key", line) // unhashable
            : item is string k && dict.ContainsKey(k),
        JinjaNamespace ns => item is string n && ns.Attributes.ContainsKey(n),
        Undefined => false,
        _ => throw new JinjaException($"a {TypeName(container)} cannot be searched with 'in'", line),
    };

    /// <summary>
    /// Python's binary operators. Python's integers never overflow; ours are 64-bit, so an integer result out of
    /// range is an error rather than a wrong number.
    /// </summary>
    public static object? Arithmetic(string op, object? a, object? b, int line)
    {
        if (op == "~") return ToStr(a) + ToStr(b);
        if (op == "%" && a is string format) return JinjaStrings.PercentFormat(format, b, line); // str % anything formats, even Undefined ("")
        if (a is Undefined ua) throw new JinjaException(ua.Hint, line);
        if (b is Undefined ub) throw new JinjaException(ub.Hint, line);
        if (IsNumber(a) && IsNumber(b))
        {
            bool floating = a is double || b is double;
            double x = ToDouble(a), y = ToDouble(b);
            long i = ToLong(a), j = ToLong(b);
            try
            {
                switch (op)
                {
                    case "+": return floating ? (object)(x + y) : checked(i + j);
                    case "-": return floating ? (object)(x - y) : checked(i - j);
                    case "*": return floating ? (object)(x * y) : checked(i * j);
                    case "/":
                        if (y == 0) throw new JinjaException("division by zero", line);
                        return x / y;
                    case "//":
                        if (y == 0) throw new JinjaException("integer division by zero", line);
                        return floating ? (object)Math.Floor(x / y) : FloorDiv(i, j);
                    case "%":
                        if (y == 0) throw new JinjaException("modulo by zero", line);
                        return floating ? (object)FloatModulo(x, y) : i - j * FloorDiv(i, j);
                    case "**":
                        if (!floating && j >= 0) return IntegerPower(i, j);
                        if (x == 0 && y < 0) throw new JinjaException("0.0 cannot be raised to a negative power", line);
                        if (x < 0 && y != Math.Floor(y)) throw new JinjaException("a negative number to a fractional power is complex", line);
                        double power = Math.Pow(x, y);
                        return double.IsInfinity(power) && double.IsFinite(x) && double.IsFinite(y)
                            ? throw new JinjaException("numerical result out of range", line) // Python's OverflowError
                            : power;
                }
            }
            catch (OverflowException)
            {
                throw new JinjaException($"integer overflow in {Repr(a)} {op} {Repr(b)} (Python's integers are unbounded, these are 64-bit)", line);
            }
        }
        if (op == "+" && a is string sa && b is string sb) return sa + sb;
        if (op == "+" && a is List<object?> la && b is List<object?> lb && (a is JinjaTuple) == (b is JinjaTuple)) // list + list, tuple + tuple
            return a is JinjaTuple ? new JinjaTuple(la.Concat(lb)) : la.Concat(lb).ToList();
        if (op == "*" && (a is string || b is string || a is List<object?> || b is List<object?>) && (a is long or bool || b is long or bool))
        {
            // "ab" * 2, [1] * 2 (either way round; a bool counts as 0 or 1)
            object sequence = (a is long or bool ? b : a)!;
            long n = Math.Max(0, ToLong(a is long or bool ? a : b));
            int length = sequence is string s ? s.Length : ((List<object?>)sequence).Count;
            if (length > 0 && n > 100_000_000 / length)
                throw new JinjaException("a repeated string or list would be too long", line);
            if (sequence is string text) return string.Concat(Enumerable.Repeat(text, (int)n));
            var repeated = Enumerable.Repeat((List<object?>)sequence, (int)n).SelectMany(l => l);
            return sequence is JinjaTuple ? new JinjaTuple(repeated) : repeated.ToList();
        }
        throw new JinjaException($"unsupported operand types for {op}: '{TypeName(a)}' and '{TypeName(b)}'", line);
    }

    static long IntegerPower(long i, long j)
    {
        long result = 1;
        while (j > 0)
        {
            if ((j & 1) == 1) result = checked(result * i);
            j >>= 1;
            if (j > 0) i = checked(i * i);
        }
        return result;
    }

    // Python's float %: the remainder takes the sign of the divisor.
    static double FloatModulo(double x, double y)
    {
        double r = x % y; // C#'s % on doubles is C's fmod
        if (r == 0) return y < 0 ? -0.0 : 0.0;
        return (r < 0) != (y < 0) ? r + y : r;
    }

    static long FloorDiv(long i, long j)
    {
        long q = i / j;
        return (i % j != 0 && (i < 0) != (j < 0)) ? q - 1 : q;
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
}
