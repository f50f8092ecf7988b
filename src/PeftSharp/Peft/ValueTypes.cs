using System.Collections.ObjectModel;

namespace PeftSharp.Peft;

/// <summary>
/// PEFT's <c>target_modules</c> / <c>exclude_modules</c>: either a list of module names (each matches a module path
/// exactly or as a dot-separated suffix) or a single string that is a regular expression the whole module path must
/// match. The string <c>"all-linear"</c> (any case) is PEFT's shorthand for every linear layer except the output
/// layer; see <see cref="ModuleMatcher.ExpandAllLinear(IEnumerable{string}, IEnumerable{string})"/>.
/// </summary>
public sealed class TargetModules : IEquatable<TargetModules>
{
    /// <summary>PEFT's INCLUDE_LINEAR_LAYERS_SHORTHAND.</summary>
    public const string AllLinearShorthand = "all-linear";

    private TargetModules(IReadOnlyList<string>? names, string? regex)
    {
        Names = names;
        Regex = regex;
    }

    /// <summary>The module names when this is a list (PEFT keeps them as a set: no duplicates); otherwise null.</summary>
    public IReadOnlyList<string>? Names { get; }

    /// <summary>The regular expression (Python <c>re</c> syntax, matched with fullmatch) when this is a string; otherwise null.</summary>
    public string? Regex { get; }

    /// <summary>True when this is a regular expression rather than a list of names.</summary>
    public bool IsRegex => Regex is not null;

    /// <summary>True for the <c>"all-linear"</c> shorthand (compared case-insensitively, as PEFT lower-cases it).</summary>
    public bool IsAllLinear => Regex is not null && string.Equals(Regex, AllLinearShorthand, StringComparison.OrdinalIgnoreCase);

    /// <summary>The <c>"all-linear"</c> shorthand.</summary>
    public static TargetModules AllLinear { get; } = new(null, AllLinearShorthand);

    /// <summary>A list of module names; duplicates are dropped (PEFT turns the list into a set), first occurrence kept.</summary>
    public static TargetModules FromNames(IEnumerable<string> names)
    {
        ArgumentNullException.ThrowIfNull(names);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var list = new List<string>();
        foreach (var n in names)
        {
            if (n is null) throw new ArgumentException("Module names must not be null.", nameof(names));
            if (seen.Add(n)) list.Add(n);
        }
        return new TargetModules(list.AsReadOnly(), null);
    }

    /// <summary>A list of module names (see the IEnumerable overload).</summary>
    public static TargetModules FromNames(params string[] names) => FromNames((IEnumerable<string>)names);

    /// <summary>A regular expression in Python <c>re</c> syntax that a module path must match in full.</summary>
    public static TargetModules FromRegex(string regex)
    {
        ArgumentNullException.ThrowIfNull(regex);
        return new TargetModules(null, regex);
    }

    /// <summary>A list of module names.</summary>
    public static implicit operator TargetModules(string[] names) => FromNames(names);
    /// <summary>A list of module names.</summary>
    public static implicit operator TargetModules(List<string> names) => FromNames(names);

    /// <summary>The names in the order PeftSharp writes them: sorted by code point (PEFT writes a set, whose order is arbitrary).</summary>
    internal IReadOnlyList<string> SortedNames()
    {
        var list = new List<string>(Names ?? []);
        list.Sort(PythonJson.CompareCodePoints);
        return list;
    }

    /// <summary>Same regular expression, or the same set of names (order ignored).</summary>
    public bool Equals(TargetModules? other)
    {
        if (other is null) return false;
        if (IsRegex || other.IsRegex) return string.Equals(Regex, other.Regex, StringComparison.Ordinal);
        return Names!.Count == other.Names!.Count && Names.ToHashSet(StringComparer.Ordinal).SetEquals(other.Names);
    }

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as TargetModules);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        if (Regex is not null) return StringComparer.Ordinal.GetHashCode(Regex);
        int h = Names!.Count;
        foreach (var n in Names) h ^= StringComparer.Ordinal.GetHashCode(n);
        return h;
    }

    /// <summary>The regular expression or the name list, for messages.</summary>
    public override string ToString() => Regex is not null ? $"regex \"{Regex}\"" : $"[{string.Join(", ", Names!)}]";
}

/// <summary>
/// PEFT's <c>init_lora_weights</c>: <c>true</c> (default: B = 0, so the adapter starts as a no-op), <c>false</c>
/// (random A and B, for debugging) or the name of an initialisation method such as <c>"gaussian"</c>,
/// <c>"pissa"</c>, <c>"pissa_niter_16"</c>, <c>"olora"</c>, <c>"loftq"</c>, <c>"eva"</c>, <c>"corda"</c>,
/// <c>"orthogonal"</c>, <c>"mica"</c>, <c>"lora_ga"</c>.
/// </summary>
public sealed class InitLoraWeights : IEquatable<InitLoraWeights>
{
    private InitLoraWeights(bool? flag, string? method)
    {
        Flag = flag;
        Method = method;
    }

    /// <summary>The boolean value, or null when this is a method name.</summary>
    public bool? Flag { get; }

    /// <summary>The method name, or null when this is a boolean.</summary>
    public string? Method { get; }

    /// <summary><c>true</c>: PEFT's default (A Kaiming-uniform, B = 0).</summary>
    public static InitLoraWeights True { get; } = new(true, null);
    /// <summary><c>false</c>: A and B both random (the adapter is not a no-op; for tests).</summary>
    public static InitLoraWeights False { get; } = new(false, null);
    /// <summary><c>"gaussian"</c>: A normal with std 1/r, B = 0.</summary>
    public static InitLoraWeights Gaussian { get; } = new(null, "gaussian");
    /// <summary><c>"eva"</c>: PEFT's data-driven EVA initialisation (read and written; PeftSharp cannot initialise with it).</summary>
    public static InitLoraWeights Eva { get; } = new(null, "eva");
    /// <summary><c>"olora"</c>: A and B from the QR decomposition of the base weight.</summary>
    public static InitLoraWeights Olora { get; } = new(null, "olora");
    /// <summary><c>"pissa"</c>: A and B from the top singular values and vectors of the base weight; the base weight keeps the residual.</summary>
    public static InitLoraWeights Pissa { get; } = new(null, "pissa");
    /// <summary><c>"corda"</c>: PEFT's CorDA initialisation (read and written; PeftSharp cannot initialise with it).</summary>
    public static InitLoraWeights Corda { get; } = new(null, "corda");
    /// <summary><c>"loftq"</c>: LoftQ, alternating quantization and low-rank fitting.</summary>
    public static InitLoraWeights Loftq { get; } = new(null, "loftq");
    /// <summary><c>"orthogonal"</c>: PEFT's orthogonal initialisation (read and written; PeftSharp cannot initialise with it).</summary>
    public static InitLoraWeights Orthogonal { get; } = new(null, "orthogonal");
    /// <summary><c>"mica"</c>: PEFT's MiCA initialisation (read and written; PeftSharp cannot initialise with it).</summary>
    public static InitLoraWeights Mica { get; } = new(null, "mica");
    /// <summary><c>"lora_ga"</c>: PEFT's LoRA-GA initialisation (read and written; PeftSharp cannot initialise with it).</summary>
    public static InitLoraWeights LoraGa { get; } = new(null, "lora_ga");

    /// <summary>Fast-SVD PiSSA with the given number of subspace iterations: <c>"pissa_niter_{n}"</c>.</summary>
    public static InitLoraWeights PissaNiter(int iterations)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(iterations);
        return new(null, $"pissa_niter_{iterations}");
    }

    /// <summary>Any method name; PEFT does not check it when the config is created, only when layers are built.</summary>
    public static InitLoraWeights FromMethod(string method)
    {
        ArgumentNullException.ThrowIfNull(method);
        return new(null, method);
    }

    /// <summary><see cref="True"/> or <see cref="False"/>.</summary>
    public static InitLoraWeights FromBool(bool value) => value ? True : False;

    /// <summary><see cref="True"/> or <see cref="False"/>.</summary>
    public static implicit operator InitLoraWeights(bool value) => FromBool(value);
    /// <summary>A method by name (see <see cref="FromMethod"/>).</summary>
    public static implicit operator InitLoraWeights(string method) => FromMethod(method);

    /// <summary>True when this names a method rather than a boolean.</summary>
    public bool IsMethod => Method is not null;

    /// <summary>True for <c>"pissa"</c> and <c>"pissa_niter_N"</c> (PEFT tests <c>startswith("pissa")</c>).</summary>
    public bool IsPissa => Method is not null && Method.StartsWith("pissa", StringComparison.Ordinal);

    /// <summary>The N of <c>"pissa_niter_N"</c>, or null.</summary>
    public int? PissaIterations =>
        Method is not null && Method.StartsWith("pissa_niter_", StringComparison.Ordinal)
        && int.TryParse(Method.AsSpan("pissa_niter_".Length), System.Globalization.NumberStyles.None,
            System.Globalization.CultureInfo.InvariantCulture, out var n)
            ? n
            : null;

    /// <summary>Same boolean or same method name.</summary>
    public bool Equals(InitLoraWeights? other) =>
        other is not null && Flag == other.Flag && string.Equals(Method, other.Method, StringComparison.Ordinal);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as InitLoraWeights);
    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Flag, Method);
    /// <summary>The value as PEFT writes it: the method name, or true/false.</summary>
    public override string ToString() => Method ?? (Flag == true ? "true" : "false");
}

/// <summary>A field PEFT accepts either as one value or as a list (<c>layers_to_transform</c>, <c>layers_pattern</c>); the form is kept for writing back.</summary>
public sealed class OneOrMany<T> : IEquatable<OneOrMany<T>>
{
    private OneOrMany(IReadOnlyList<T> items, bool isSingle)
    {
        Items = items;
        IsSingle = isSingle;
    }

    /// <summary>The values: exactly one when <see cref="IsSingle"/>.</summary>
    public IReadOnlyList<T> Items { get; }

    /// <summary>True when the value is a single item rather than a list.</summary>
    public bool IsSingle { get; }

    /// <summary>A single value (written back as a scalar).</summary>
    public static OneOrMany<T> One(T item) => new(new ReadOnlyCollection<T>([item]), true);

    /// <summary>A list (written back as a list, even of one item).</summary>
    public static OneOrMany<T> Many(IEnumerable<T> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        return new(items.ToList().AsReadOnly(), false);
    }

    /// <summary>A single value.</summary>
    public static implicit operator OneOrMany<T>(T item) => One(item);
    /// <summary>A list.</summary>
    public static implicit operator OneOrMany<T>(T[] items) => Many(items);
    /// <summary>A list.</summary>
    public static implicit operator OneOrMany<T>(List<T> items) => Many(items);

    /// <summary>Same form (single or list) and same items in order.</summary>
    public bool Equals(OneOrMany<T>? other) =>
        other is not null && IsSingle == other.IsSingle && Items.SequenceEqual(other.Items);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as OneOrMany<T>);
    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(IsSingle, Items.Count);
    /// <summary>The item, or the list in brackets.</summary>
    public override string ToString() => IsSingle ? $"{Items[0]}" : $"[{string.Join(", ", Items)}]";
}

/// <summary>One <c>[start, end)</c> range of PEFT's <c>layer_replication</c>.</summary>
public readonly record struct LayerRange(int Start, int End);

/// <summary>
/// PEFT's <c>trainable_token_indices</c>: either a list of token indices for the input embedding, or a mapping from
/// embedding module name to token indices.
/// </summary>
public sealed class TrainableTokenIndices : IEquatable<TrainableTokenIndices>
{
    private TrainableTokenIndices(IReadOnlyList<int>? indices, IReadOnlyDictionary<string, IReadOnlyList<int>>? perModule)
    {
        Indices = indices;
        PerModule = perModule;
    }

    /// <summary>Token indices for the model's input embedding, or null when given per module.</summary>
    public IReadOnlyList<int>? Indices { get; }

    /// <summary>Token indices per embedding module name (in the order given), or null when given as a plain list.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<int>>? PerModule { get; }

    /// <summary>A plain list of token indices, for the input embedding.</summary>
    public static TrainableTokenIndices ForInputEmbedding(IEnumerable<int> indices) =>
        new(indices.ToList().AsReadOnly(), null);

    /// <summary>Token indices per embedding module name.</summary>
    public static TrainableTokenIndices ForModules(IEnumerable<KeyValuePair<string, IReadOnlyList<int>>> perModule)
    {
        var d = new OrderedDictionary<string, IReadOnlyList<int>>(StringComparer.Ordinal);
        foreach (var (k, v) in perModule) d[k] = v.ToList().AsReadOnly();
        return new(null, new ReadOnlyDictionary<string, IReadOnlyList<int>>(d));
    }

    /// <summary>Same plain list, or the same modules with the same indices.</summary>
    public bool Equals(TrainableTokenIndices? other)
    {
        if (other is null) return false;
        if (Indices is not null || other.Indices is not null)
            return Indices is not null && other.Indices is not null && Indices.SequenceEqual(other.Indices);
        return PerModule!.Count == other.PerModule!.Count
               && PerModule.All(kv => other.PerModule.TryGetValue(kv.Key, out var v) && v.SequenceEqual(kv.Value));
    }

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as TrainableTokenIndices);
    /// <inheritdoc/>
    public override int GetHashCode() => Indices?.Count ?? PerModule!.Count;
}

/// <summary>PEFT's LoraRuntimeConfig: settings that only matter while running and are never saved.</summary>
public sealed class LoraRuntimeConfig
{
    /// <summary>Copy data to the GPU for heavy operations on CPU-resident layers (PEFT: only DoRA initialisation).</summary>
    public bool EphemeralGpuOffload { get; set; }
}
