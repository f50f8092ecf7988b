using System.Collections.Concurrent;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace PeftSharp.Peft;

/// <summary>
/// Marks a <see cref="double"/> property whose PEFT field is a Python float (written <c>0.0</c>, not <c>0</c>).
/// Other <see cref="double"/> properties stand for PEFT fields typed int that may hold a float (like
/// <c>lora_alpha</c>): whole values are written as ints.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
internal sealed class PythonFloatAttribute : Attribute;

/// <summary>How one config field is read from and written to adapter_config.json.</summary>
internal sealed class ConfigField
{
    public required string JsonName { get; init; }
    public required PropertyInfo Property { get; init; }
    public required FieldCodec Codec { get; init; }
    public required bool Nullable { get; init; }

    public string Expected => Nullable ? $"{Codec.Expected} or null" : Codec.Expected;

    private static readonly ConcurrentDictionary<Type, IReadOnlyList<ConfigField>> Cache = new();

    /// <summary>The serialised fields of a config type: its public properties carrying [JsonPropertyName].</summary>
    public static IReadOnlyList<ConfigField> For(Type type) => Cache.GetOrAdd(type, Build);

    private static IReadOnlyList<ConfigField> Build(Type type)
    {
        var nullability = new NullabilityInfoContext();
        var fields = new List<ConfigField>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        var props = type.GetProperties(BindingFlags.Public | BindingFlags.Instance);
        foreach (var prop in props)
        {
            // A subclass may redeclare a field with `new` (PEFT's AdaLoraConfig retypes LoraConfig's rank_pattern):
            // the most derived declaration is the field.
            if (props.Any(p => p.Name == prop.Name && p.DeclaringType != prop.DeclaringType && p.DeclaringType!.IsSubclassOf(prop.DeclaringType!)))
                continue;
            var nameAttr = prop.GetCustomAttribute<JsonPropertyNameAttribute>();
            if (nameAttr is null || prop.IsDefined(typeof(JsonIgnoreAttribute))) continue;
            if (!names.Add(nameAttr.Name))
                throw new InvalidOperationException($"{type.Name}: two properties are named '{nameAttr.Name}'.");
            var t = prop.PropertyType;
            bool nullable = System.Nullable.GetUnderlyingType(t) is not null
                            || (!t.IsValueType && nullability.Create(prop).WriteState == NullabilityState.Nullable);
            fields.Add(new ConfigField
            {
                JsonName = nameAttr.Name,
                Property = prop,
                Nullable = nullable,
                Codec = FieldCodec.ForProperty(prop),
            });
        }
        return fields.AsReadOnly();
    }
}

/// <summary>State shared by the codecs while one file is read: where errors point, and number literals seen.</summary>
internal sealed class FieldReadContext(string source, string field, PeftConfig config, bool nullable = false)
{
    public string Source { get; } = source;
    public string Field { get; } = field;
    public PeftConfig Config { get; } = config;

    /// <summary>Whether the field itself may be null (said in errors about the field's value, not its entries).</summary>
    public bool Nullable { get; } = nullable;

    public PeftSharpException Error(string expected, JsonElement got, string? entry = null) =>
        new($"{Source}: field '{Field}'{(entry is null ? "" : $" entry {entry}")} must be {expected}{(entry is null && Nullable && !expected.EndsWith(" or null", StringComparison.Ordinal) ? " or null" : "")}, got {Describe(got)}");

    public static string Describe(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => $"a string ({Quote(e.GetString() ?? "")})",
        JsonValueKind.Number => $"the number {e.GetRawText()}",
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        JsonValueKind.Null => "null",
        JsonValueKind.Array => "a list",
        JsonValueKind.Object => "an object",
        _ => e.ValueKind.ToString(),
    };

    public static string Quote(string s)
    {
        if (s.Length > 40) s = s[..37] + "...";
        var sb = new System.Text.StringBuilder();
        PythonJson.WriteString(sb, s);
        return sb.ToString();
    }
}

/// <summary>Reads and writes one kind of field value (the JSON shapes PEFT accepts for it).</summary>
internal abstract class FieldCodec
{
    /// <summary>What the JSON value must be, for error messages ("an integer", "a list of strings", ...).</summary>
    public abstract string Expected { get; }

    /// <summary>Reads a non-null JSON value; throws <see cref="PeftSharpException"/> via the context on a wrong type.</summary>
    public abstract object Read(JsonElement e, FieldReadContext ctx);

    /// <summary>Writes a non-null value as the JSON node Python would hold for it.</summary>
    public abstract JsonNode? Write(object value, PeftConfig config, string field);

    public static FieldCodec ForProperty(PropertyInfo prop)
    {
        var t = System.Nullable.GetUnderlyingType(prop.PropertyType) ?? prop.PropertyType;
        if (t == typeof(int)) return IntCodec.Instance;
        if (t == typeof(bool)) return BoolCodec.Instance;
        if (t == typeof(string)) return StringCodec.Instance;
        if (t == typeof(double))
            return prop.IsDefined(typeof(PythonFloatAttribute)) ? NumberCodec.Float : NumberCodec.IntWhenWhole;
        if (t == typeof(JsonObject)) return ObjectCodec.Instance;
        if (t == typeof(JsonNode)) return AnyCodec.Instance;
        if (t == typeof(TargetModules)) return TargetModulesCodec.Instance;
        if (t == typeof(InitLoraWeights)) return InitLoraWeightsCodec.Instance;
        if (t == typeof(OneOrMany<int>)) return OneOrManyCodec<int>.Ints;
        if (t == typeof(OneOrMany<string>)) return OneOrManyCodec<string>.Strings;
        if (t == typeof(OrderedDictionary<string, int>)) return IntDictCodec.Instance;
        if (t == typeof(OrderedDictionary<string, IReadOnlyList<bool>>)) return BoolListDictCodec.Instance;
        if (t == typeof(OrderedDictionary<string, double>))
            return prop.IsDefined(typeof(PythonFloatAttribute)) ? NumberDictCodec.Float : NumberDictCodec.IntWhenWhole;
        if (t == typeof(IReadOnlyList<string>)) return ListCodec<string>.Strings;
        if (t == typeof(IReadOnlyList<int>)) return ListCodec<int>.Ints;
        if (t == typeof(IReadOnlyList<LayerRange>)) return LayerRangesCodec.Instance;
        if (t == typeof(TrainableTokenIndices)) return TrainableTokenIndicesCodec.Instance;
        throw new NotSupportedException($"{prop.DeclaringType?.Name}.{prop.Name}: no adapter_config.json codec for {t.Name}.");
    }

    // ---- element helpers shared by the codecs ----

    internal static bool TryInt(JsonElement e, out int value)
    {
        value = 0;
        return e.ValueKind == JsonValueKind.Number && !PythonJson.IsFloatLiteral(e.GetRawText()) && e.TryGetInt32(out value);
    }

    internal static string ReadString(JsonElement e, FieldReadContext ctx, string expected, string? entry = null)
    {
        if (e.ValueKind != JsonValueKind.String) throw ctx.Error(expected, e, entry);
        try
        {
            return e.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw new PeftSharpException($"{ctx.Source}: field '{ctx.Field}' holds a string that is not valid UTF-16 (a lone surrogate escape)");
        }
    }

    internal static int ReadInt(JsonElement e, FieldReadContext ctx, string expected, string? entry = null) =>
        TryInt(e, out var v) ? v : throw ctx.Error(expected, e, entry);

    internal static JsonArray IntArray(IEnumerable<int> values)
    {
        var arr = new JsonArray();
        foreach (var v in values) arr.Add(JsonValue.Create(v));
        return arr;
    }
}

internal sealed class IntCodec : FieldCodec
{
    public static readonly IntCodec Instance = new();
    public override string Expected => "an integer";
    public override object Read(JsonElement e, FieldReadContext ctx) => ReadInt(e, ctx, Expected);
    public override JsonNode Write(object value, PeftConfig config, string field) => JsonValue.Create((int)value);
}

internal sealed class BoolCodec : FieldCodec
{
    public static readonly BoolCodec Instance = new();
    public override string Expected => "true or false";

    public override object Read(JsonElement e, FieldReadContext ctx) => e.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw ctx.Error(Expected, e),
    };

    public override JsonNode Write(object value, PeftConfig config, string field) => JsonValue.Create((bool)value);
}

internal sealed class StringCodec : FieldCodec
{
    public static readonly StringCodec Instance = new();
    public override string Expected => "a string";
    public override object Read(JsonElement e, FieldReadContext ctx) => ReadString(e, ctx, Expected);
    public override JsonNode Write(object value, PeftConfig config, string field) => JsonValue.Create((string)value);
}

/// <summary>
/// A number held as <see cref="double"/>. Python keeps ints and floats apart, so the literal read from the file is
/// remembered: an unchanged value is written back in the form it was read (<c>16</c> stays <c>16</c>, <c>16.0</c>
/// stays <c>16.0</c>); a new value is written as an int when whole for int-typed PEFT fields, as a float otherwise.
/// </summary>
internal sealed class NumberCodec(bool pythonFloat) : FieldCodec
{
    public static readonly NumberCodec Float = new(true);
    public static readonly NumberCodec IntWhenWhole = new(false);

    public override string Expected => "a number";

    public override object Read(JsonElement e, FieldReadContext ctx)
    {
        if (e.ValueKind != JsonValueKind.Number) throw ctx.Error(Expected, e);
        double v = e.GetDouble();
        ctx.Config.RememberLiteral(ctx.Field, null, v, PythonJson.IsFloatLiteral(e.GetRawText()));
        return v;
    }

    public override JsonNode Write(object value, PeftConfig config, string field) =>
        ToNode((double)value, config.RecalledLiteral(field, null, (double)value), pythonFloat);

    internal static JsonNode ToNode(double v, bool? wasFloatLiteral, bool pythonFloat)
    {
        bool asFloat = wasFloatLiteral ?? pythonFloat;
        if (!asFloat && double.IsFinite(v) && Math.Floor(v) == v && Math.Abs(v) < 9.2e18)
            return JsonValue.Create((long)v);
        return JsonValue.Create(v);
    }
}

internal sealed class ObjectCodec : FieldCodec
{
    public static readonly ObjectCodec Instance = new();
    public override string Expected => "an object";

    public override object Read(JsonElement e, FieldReadContext ctx) =>
        e.ValueKind == JsonValueKind.Object ? JsonTree.FromElement(e)! : throw ctx.Error(Expected, e);

    public override JsonNode Write(object value, PeftConfig config, string field) => ((JsonObject)value).DeepClone();
}

internal sealed class AnyCodec : FieldCodec
{
    public static readonly AnyCodec Instance = new();
    public override string Expected => "any JSON value";
    public override object Read(JsonElement e, FieldReadContext ctx) => JsonTree.FromElement(e)!;
    public override JsonNode Write(object value, PeftConfig config, string field) => ((JsonNode)value).DeepClone();
}

internal sealed class TargetModulesCodec : FieldCodec
{
    public static readonly TargetModulesCodec Instance = new();
    public override string Expected => "a list of module names or a regex string";

    public override object Read(JsonElement e, FieldReadContext ctx)
    {
        if (e.ValueKind == JsonValueKind.String) return TargetModules.FromRegex(ReadString(e, ctx, Expected));
        if (e.ValueKind != JsonValueKind.Array) throw ctx.Error(Expected, e);
        var names = new List<string>();
        int i = 0;
        foreach (var item in e.EnumerateArray())
            names.Add(ReadString(item, ctx, "a string", $"[{i++}]"));
        return TargetModules.FromNames(names);
    }

    public override JsonNode Write(object value, PeftConfig config, string field)
    {
        var tm = (TargetModules)value;
        if (tm.Regex is not null) return JsonValue.Create(tm.Regex);
        var arr = new JsonArray();
        foreach (var n in tm.SortedNames()) arr.Add(JsonValue.Create(n));
        return arr;
    }
}

internal sealed class InitLoraWeightsCodec : FieldCodec
{
    public static readonly InitLoraWeightsCodec Instance = new();
    public override string Expected => "true, false or an initialisation method name";

    public override object Read(JsonElement e, FieldReadContext ctx) => e.ValueKind switch
    {
        JsonValueKind.True => InitLoraWeights.True,
        JsonValueKind.False => InitLoraWeights.False,
        JsonValueKind.String => InitLoraWeights.FromMethod(ReadString(e, ctx, Expected)),
        _ => throw ctx.Error(Expected, e),
    };

    public override JsonNode Write(object value, PeftConfig config, string field)
    {
        var w = (InitLoraWeights)value;
        return w.Method is not null ? JsonValue.Create(w.Method) : JsonValue.Create(w.Flag!.Value);
    }
}

internal sealed class OneOrManyCodec<T>(string expected, Func<JsonElement, FieldReadContext, string?, T> readItem, Func<T, JsonNode> writeItem)
    : FieldCodec
{
    public static readonly OneOrManyCodec<int> Ints = new(
        "an integer or a list of integers",
        (e, ctx, entry) => ReadInt(e, ctx, "an integer", entry),
        v => JsonValue.Create(v));

    public static readonly OneOrManyCodec<string> Strings = new(
        "a string or a list of strings",
        (e, ctx, entry) => ReadString(e, ctx, "a string", entry),
        v => JsonValue.Create(v));

    public override string Expected => expected;

    public override object Read(JsonElement e, FieldReadContext ctx)
    {
        if (e.ValueKind == JsonValueKind.Array)
        {
            var items = new List<T>();
            int i = 0;
            foreach (var item in e.EnumerateArray()) items.Add(readItem(item, ctx, $"[{i++}]"));
            return OneOrMany<T>.Many(items);
        }
        if (e.ValueKind is JsonValueKind.Object or JsonValueKind.Null or JsonValueKind.True or JsonValueKind.False)
            throw ctx.Error(Expected, e);
        try
        {
            return OneOrMany<T>.One(readItem(e, ctx, null));
        }
        catch (PeftSharpException)
        {
            throw ctx.Error(Expected, e);
        }
    }

    public override JsonNode Write(object value, PeftConfig config, string field)
    {
        var v = (OneOrMany<T>)value;
        if (v.IsSingle) return writeItem(v.Items[0]);
        var arr = new JsonArray();
        foreach (var item in v.Items) arr.Add(writeItem(item));
        return arr;
    }
}

internal sealed class ListCodec<T>(string expected, Func<JsonElement, FieldReadContext, string?, T> readItem, Func<T, JsonNode> writeItem)
    : FieldCodec
{
    public static readonly ListCodec<string> Strings = new(
        "a list of strings",
        (e, ctx, entry) => ReadString(e, ctx, "a string", entry),
        v => JsonValue.Create(v));

    public static readonly ListCodec<int> Ints = new(
        "a list of integers",
        (e, ctx, entry) => ReadInt(e, ctx, "an integer", entry),
        v => JsonValue.Create(v));

    public override string Expected => expected;

    public override object Read(JsonElement e, FieldReadContext ctx)
    {
        if (e.ValueKind != JsonValueKind.Array) throw ctx.Error(Expected, e);
        var items = new List<T>();
        int i = 0;
        foreach (var item in e.EnumerateArray()) items.Add(readItem(item, ctx, $"[{i++}]"));
        return items.AsReadOnly();
    }

    public override JsonNode Write(object value, PeftConfig config, string field)
    {
        var arr = new JsonArray();
        foreach (var item in (IReadOnlyList<T>)value) arr.Add(writeItem(item));
        return arr;
    }
}

internal sealed class IntDictCodec : FieldCodec
{
    public static readonly IntDictCodec Instance = new();
    public override string Expected => "an object mapping names to integers";

    public override object Read(JsonElement e, FieldReadContext ctx)
    {
        if (e.ValueKind != JsonValueKind.Object) throw ctx.Error(Expected, e);
        var d = new OrderedDictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject())
            d[p.Name] = ReadInt(p.Value, ctx, "an integer", FieldReadContext.Quote(p.Name));
        return d;
    }

    public override JsonNode Write(object value, PeftConfig config, string field)
    {
        var obj = new JsonObject();
        foreach (var (k, v) in (OrderedDictionary<string, int>)value) obj[k] = JsonValue.Create(v);
        return obj;
    }
}

/// <summary>An object mapping names to lists of booleans (AdaLoRA's rank_pattern: which singular triplets are kept).</summary>
internal sealed class BoolListDictCodec : FieldCodec
{
    public static readonly BoolListDictCodec Instance = new();
    public override string Expected => "an object mapping names to lists of true/false";

    public override object Read(JsonElement e, FieldReadContext ctx)
    {
        if (e.ValueKind != JsonValueKind.Object) throw ctx.Error(Expected, e);
        var d = new OrderedDictionary<string, IReadOnlyList<bool>>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject())
        {
            string entry = FieldReadContext.Quote(p.Name);
            if (p.Value.ValueKind != JsonValueKind.Array) throw ctx.Error("a list of true/false", p.Value, entry);
            var items = new List<bool>();
            foreach (var item in p.Value.EnumerateArray())
                items.Add(item.ValueKind switch
                {
                    JsonValueKind.True => true,
                    JsonValueKind.False => false,
                    _ => throw ctx.Error("a list of true/false", item, entry),
                });
            d[p.Name] = items.AsReadOnly();
        }
        return d;
    }

    public override JsonNode Write(object value, PeftConfig config, string field)
    {
        var obj = new JsonObject();
        foreach (var (k, v) in (OrderedDictionary<string, IReadOnlyList<bool>>)value)
        {
            var arr = new JsonArray();
            foreach (var b in v) arr.Add(JsonValue.Create(b));
            obj[k] = arr;
        }
        return obj;
    }
}

internal sealed class NumberDictCodec(bool pythonFloat) : FieldCodec
{
    public static readonly NumberDictCodec Float = new(true);
    public static readonly NumberDictCodec IntWhenWhole = new(false);
    public override string Expected => "an object mapping names to numbers";

    public override object Read(JsonElement e, FieldReadContext ctx)
    {
        if (e.ValueKind != JsonValueKind.Object) throw ctx.Error(Expected, e);
        var d = new OrderedDictionary<string, double>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number)
                throw ctx.Error("a number", p.Value, FieldReadContext.Quote(p.Name));
            double v = p.Value.GetDouble();
            d[p.Name] = v;
            ctx.Config.RememberLiteral(ctx.Field, p.Name, v, PythonJson.IsFloatLiteral(p.Value.GetRawText()));
        }
        return d;
    }

    public override JsonNode Write(object value, PeftConfig config, string field)
    {
        var obj = new JsonObject();
        foreach (var (k, v) in (OrderedDictionary<string, double>)value)
            obj[k] = NumberCodec.ToNode(v, config.RecalledLiteral(field, k, v), pythonFloat);
        return obj;
    }
}

internal sealed class LayerRangesCodec : FieldCodec
{
    public static readonly LayerRangesCodec Instance = new();
    public override string Expected => "a list of [start, end] integer pairs";

    public override object Read(JsonElement e, FieldReadContext ctx)
    {
        if (e.ValueKind != JsonValueKind.Array) throw ctx.Error(Expected, e);
        var ranges = new List<LayerRange>();
        int i = 0;
        foreach (var item in e.EnumerateArray())
        {
            string entry = $"[{i++}]";
            if (item.ValueKind != JsonValueKind.Array || item.GetArrayLength() != 2)
                throw ctx.Error("a [start, end] pair of integers", item, entry);
            ranges.Add(new LayerRange(
                ReadInt(item[0], ctx, "a [start, end] pair of integers", entry),
                ReadInt(item[1], ctx, "a [start, end] pair of integers", entry)));
        }
        return ranges.AsReadOnly();
    }

    public override JsonNode Write(object value, PeftConfig config, string field)
    {
        var arr = new JsonArray();
        foreach (var r in (IReadOnlyList<LayerRange>)value) arr.Add(IntArray([r.Start, r.End]));
        return arr;
    }
}

internal sealed class TrainableTokenIndicesCodec : FieldCodec
{
    public static readonly TrainableTokenIndicesCodec Instance = new();
    public override string Expected => "a list of token indices or an object mapping module names to lists of token indices";

    public override object Read(JsonElement e, FieldReadContext ctx)
    {
        if (e.ValueKind == JsonValueKind.Array) return TrainableTokenIndices.ForInputEmbedding(ReadInts(e, ctx, null));
        if (e.ValueKind != JsonValueKind.Object) throw ctx.Error(Expected, e);
        var d = new OrderedDictionary<string, IReadOnlyList<int>>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject())
        {
            string entry = FieldReadContext.Quote(p.Name);
            if (p.Value.ValueKind != JsonValueKind.Array) throw ctx.Error("a list of integers", p.Value, entry);
            d[p.Name] = ReadInts(p.Value, ctx, entry);
        }
        return TrainableTokenIndices.ForModules(d);
    }

    private static List<int> ReadInts(JsonElement arr, FieldReadContext ctx, string? entry)
    {
        var list = new List<int>();
        int i = 0;
        foreach (var item in arr.EnumerateArray())
            list.Add(ReadInt(item, ctx, "an integer", $"{entry}[{i++}]"));
        return list;
    }

    public override JsonNode Write(object value, PeftConfig config, string field)
    {
        var t = (TrainableTokenIndices)value;
        if (t.Indices is not null) return IntArray(t.Indices);
        var obj = new JsonObject();
        foreach (var (k, v) in t.PerModule!) obj[k] = IntArray(v);
        return obj;
    }
}

