using System.Globalization;
using System.Numerics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Jinja;

namespace PeftSharp.Peft;

/// <summary>
/// Writes a <see cref="JsonNode"/> tree byte for byte as CPython's
/// <c>json.dumps(obj, indent=2, sort_keys=True)</c> does (ensure_ascii and allow_nan left at their defaults).
/// </summary>
/// <remarks>
/// Numbers keep the Python type they stand for: a <see cref="JsonValue"/> created from an integral CLR type
/// (<see cref="int"/>, <see cref="long"/>, ...) is a Python int, one created from <see cref="double"/> or
/// <see cref="float"/> is a Python float (so <c>0.0</c> prints as <c>0.0</c>, <c>1e-05</c> as <c>1e-05</c>), and a
/// value parsed from JSON text is a float exactly when its literal contains '.', 'e' or 'E' — as <c>json.load</c>
/// decides.
/// </remarks>
internal static class PythonJson
{
    public static string Dumps(JsonNode? node)
    {
        var sb = new StringBuilder();
        Write(sb, node, 0);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, JsonNode? node, int level)
    {
        switch (node)
        {
            case null:
                sb.Append("null");
                return;
            case JsonObject obj:
            {
                if (obj.Count == 0)
                {
                    sb.Append("{}");
                    return;
                }
                var keys = new List<string>(obj.Count);
                foreach (var pair in obj) keys.Add(pair.Key);
                keys.Sort(CompareCodePoints);
                sb.Append('{');
                for (int i = 0; i < keys.Count; i++)
                {
                    sb.Append(i == 0 ? "\n" : ",\n");
                    sb.Append(' ', 2 * (level + 1));
                    WriteString(sb, keys[i]);
                    sb.Append(": ");
                    Write(sb, obj[keys[i]], level + 1);
                }
                sb.Append('\n').Append(' ', 2 * level).Append('}');
                return;
            }
            case JsonArray arr:
            {
                if (arr.Count == 0)
                {
                    sb.Append("[]");
                    return;
                }
                sb.Append('[');
                for (int i = 0; i < arr.Count; i++)
                {
                    sb.Append(i == 0 ? "\n" : ",\n");
                    sb.Append(' ', 2 * (level + 1));
                    Write(sb, arr[i], level + 1);
                }
                sb.Append('\n').Append(' ', 2 * level).Append(']');
                return;
            }
            case JsonValue value:
                WriteValue(sb, value, level);
                return;
            default:
                throw new InvalidOperationException($"Unsupported JSON node type {node.GetType().Name}.");
        }
    }

    private static void WriteValue(StringBuilder sb, JsonValue value, int level)
    {
        if (value.TryGetValue<JsonElement>(out var element))
        {
            WriteElement(sb, element, level);
            return;
        }
        if (value.TryGetValue<bool>(out var b)) { sb.Append(b ? "true" : "false"); return; }
        if (value.TryGetValue<string>(out var s)) { WriteString(sb, s); return; }
        if (value.TryGetValue<char>(out var c)) { WriteString(sb, c.ToString()); return; }
        if (value.TryGetValue<int>(out var i32)) { sb.Append(i32.ToString(CultureInfo.InvariantCulture)); return; }
        if (value.TryGetValue<long>(out var i64)) { sb.Append(i64.ToString(CultureInfo.InvariantCulture)); return; }
        if (value.TryGetValue<short>(out var i16)) { sb.Append(i16.ToString(CultureInfo.InvariantCulture)); return; }
        if (value.TryGetValue<byte>(out var u8)) { sb.Append(u8.ToString(CultureInfo.InvariantCulture)); return; }
        if (value.TryGetValue<uint>(out var u32)) { sb.Append(u32.ToString(CultureInfo.InvariantCulture)); return; }
        if (value.TryGetValue<ulong>(out var u64)) { sb.Append(u64.ToString(CultureInfo.InvariantCulture)); return; }
        if (value.TryGetValue<double>(out var d)) { sb.Append(FloatRepr(d)); return; }
        if (value.TryGetValue<float>(out var f)) { sb.Append(FloatRepr(f)); return; }
        throw new InvalidOperationException($"Unsupported JSON value {value.ToJsonString()}.");
    }

    private static void WriteElement(StringBuilder sb, JsonElement e, int level)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String: WriteString(sb, e.GetString()!); break;
            case JsonValueKind.Number: sb.Append(NumberLiteral(e.GetRawText())); break;
            case JsonValueKind.True: sb.Append("true"); break;
            case JsonValueKind.False: sb.Append("false"); break;
            case JsonValueKind.Null: sb.Append("null"); break;
            case JsonValueKind.Object:
            case JsonValueKind.Array:
                Write(sb, JsonTree.FromElement(e), level);
                break;
            default:
                throw new InvalidOperationException($"Unsupported JSON element kind {e.ValueKind}.");
        }
    }

    /// <summary>True when <c>json.load</c> turns this number literal into a float rather than an int.</summary>
    public static bool IsFloatLiteral(string raw) => raw.AsSpan().IndexOfAny('.', 'e', 'E') >= 0;

    /// <summary>How Python prints the number that <c>json.load</c> makes of a JSON number literal.</summary>
    public static string NumberLiteral(string raw)
    {
        if (IsFloatLiteral(raw))
            return FloatRepr(double.Parse(raw, NumberStyles.Float, CultureInfo.InvariantCulture));
        // Python ints are unbounded; JSON forbids leading zeros, so only "-0" needs normalising.
        return BigInteger.Parse(raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture)
            .ToString(CultureInfo.InvariantCulture);
    }

    /// <summary><c>repr(float)</c> as json.dumps prints it (see <see cref="PythonLiterals.FloatRepr"/>).</summary>
    public static string FloatRepr(double value) => PythonLiterals.FloatRepr(value);

    /// <summary>A JSON string literal as json.dumps writes it (see <see cref="PythonLiterals.WriteString"/>).</summary>
    public static void WriteString(StringBuilder sb, string s, bool ensureAscii = true) => PythonLiterals.WriteString(sb, s, ensureAscii);

    /// <summary>Orders strings by Unicode code point, as Python's <c>sorted</c> does (not by UTF-16 code unit).</summary>
    public static int CompareCodePoints(string? a, string? b)
    {
        if (ReferenceEquals(a, b)) return 0;
        if (a is null) return -1;
        if (b is null) return 1;
        int n = Math.Min(a.Length, b.Length);
        for (int i = 0; i < n; i++)
        {
            char x = a[i], y = b[i];
            if (x == y) continue;
            return Fixup(x).CompareTo(Fixup(y));
        }
        return a.Length.CompareTo(b.Length);

        // Surrogates (0xD800-0xDFFF) encode code points above 0xFFFF, so they must sort after 0xE000-0xFFFF.
        static int Fixup(char c) => c >= 0xD800 ? (c >= 0xE000 ? c - 0x800 : c + 0x2000) : c;
    }
}

/// <summary>Conversions between parsed JSON and <see cref="JsonNode"/> trees with Python's dict semantics.</summary>
internal static class JsonTree
{
    /// <summary>
    /// Converts a parsed element to a node tree. Duplicate keys behave as in <c>json.load</c>: the last value wins and
    /// the key keeps the position of its first occurrence. Primitive values stay backed by the parsed element, so
    /// their literal text (int or float) is preserved.
    /// </summary>
    public static JsonNode? FromElement(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
            {
                var obj = new JsonObject();
                foreach (var p in e.EnumerateObject())
                    obj[p.Name] = FromElement(p.Value);
                return obj;
            }
            case JsonValueKind.Array:
            {
                var arr = new JsonArray();
                foreach (var item in e.EnumerateArray())
                    arr.Add(FromElement(item));
                return arr;
            }
            case JsonValueKind.Null:
                return null;
            default:
                return JsonValue.Create(e);
        }
    }
}
