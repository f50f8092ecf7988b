using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// LLM-Adapters' <c>BottleneckConfig</c> (its PEFT fork, <c>peft/src/peft/tuners/bottleneck.py</c>): the
/// <c>peft_type: "BOTTLENECK"</c> adapter_config.json behind the AdapterH / AdapterP / Parallel rows of LLM-Adapters'
/// commonsense and math tables. Field names and defaults are the fork's. Each targeted Linear layer gets one adapter
/// (see <see cref="LinearBottleneck"/> for where it acts); <c>target_modules</c> left null takes the fork's default for
/// the model type (<see cref="BottleneckDefaults"/>).
/// </summary>
public sealed class BottleneckConfig : PeftConfig
{
    /// <summary>The LLM-Adapters fork's peft_type for bottleneck adapters.</summary>
    public const string PeftTypeName = "BOTTLENECK";

    /// <summary>A bottleneck config with the fork's defaults.</summary>
    public BottleneckConfig() : base(PeftTypeName) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => PeftTypeName;

    /// <summary>Width of the bottleneck (the down-projection's output size). Default 256.</summary>
    [JsonPropertyName("bottleneck_size")]
    public int BottleneckSize { get; set; } = 256;

    /// <summary>transformers' ACT2FN name of the non-linearity. Default <c>"tanh"</c>.</summary>
    [JsonPropertyName("non_linearity")]
    public string NonLinearity { get; set; } = "tanh";

    /// <summary>Dropout on the adapter's input while training. Default 0.0.</summary>
    [JsonPropertyName("adapter_dropout")]
    [PythonFloat]
    public double AdapterDropout { get; set; }

    /// <summary>Linear layers to wrap: a list (a module path that ends with an entry, plain string suffix as the fork
    /// tests it) or a regex (full match). Null: the model type's default.</summary>
    [JsonPropertyName("target_modules")]
    public TargetModules? TargetModules { get; set; }

    /// <summary>Parallel adapters beside each target Linear (He et al.), from its input. Default false.</summary>
    [JsonPropertyName("use_parallel_adapter")]
    public bool UseParallelAdapter { get; set; }

    /// <summary>AdapterP: only changes the default target_modules (the MLP's output projection). Default false.</summary>
    [JsonPropertyName("use_adapterp")]
    public bool UseAdapterP { get; set; }

    /// <summary>A number, or <c>"learned"</c> for one trained scalar (<c>adapter_scaling</c>, initialised to 1). Default 1.0.</summary>
    [JsonPropertyName("scaling")]
    public JsonNode Scaling { get; set; } = JsonValue.Create(1.0);

    /// <summary>Which biases train: <c>"none"</c> (default), <c>"all"</c> or <c>"adapter_only"</c>.</summary>
    [JsonPropertyName("bias")]
    public string Bias { get; set; } = "none";

    /// <summary><c>"bert"</c> (default: both projections normal(0, 0.02)) or <c>"mam_adapter"</c> (down Kaiming-uniform, up zero).</summary>
    [JsonPropertyName("init_weights")]
    public string InitWeights { get; set; } = "bert";

    /// <summary>Modules besides the adapters that are trained and saved in full.</summary>
    [JsonPropertyName("modules_to_save")]
    public IReadOnlyList<string>? ModulesToSave { get; set; }

    /// <summary>True when <see cref="Scaling"/> is <c>"learned"</c>.</summary>
    [JsonIgnore]
    public bool LearnedScaling => Scaling is JsonValue v && v.GetValueKind() == JsonValueKind.String && v.GetValue<string>() == "learned";

    /// <summary>The constant scaling factor (1 when learned: the parameter starts at 1).</summary>
    [JsonIgnore]
    public double ScalingValue => LearnedScaling ? 1.0
        : Scaling.AsValue().TryGetValue<double>(out var d) ? d
        : Scaling.AsValue().TryGetValue<long>(out var l) ? l
        : Scaling.AsValue().TryGetValue<int>(out var i) ? i
        : Scaling.AsValue().GetValue<JsonElement>().GetDouble();

    /// <summary>Reads <c>adapterDir/adapter_config.json</c>.</summary>
    public static BottleneckConfig Load(string adapterDir) => LoadFromDirectory<BottleneckConfig>(adapterDir, allowOtherPeftType: false);

    /// <summary>Reads a config from JSON text (<paramref name="sourceName"/> names it in errors).</summary>
    public static BottleneckConfig FromJson(string json, string sourceName = "adapter_config.json") =>
        ParseJson<BottleneckConfig>(json, sourceName, allowOtherPeftType: false);

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (BottleneckSize < 1) throw Invalid("bottleneck_size", $"is {BottleneckSize}; expected a positive integer");
        if (AdapterDropout is < 0 or >= 1) throw Invalid("adapter_dropout", $"is {AdapterDropout}; expected a probability in [0, 1)");
        bool number = Scaling is JsonValue sv && sv.GetValueKind() == JsonValueKind.Number;
        if (!number && !LearnedScaling)
            throw Invalid("scaling", $"is {Scaling?.ToJsonString() ?? "null"}; expected a number or \"learned\"");
        if (Bias is not ("none" or "all" or "adapter_only"))
            throw Invalid("bias", $"is \"{Bias}\"; expected \"none\", \"all\" or \"adapter_only\"");
        if (InitWeights is not ("bert" or "mam_adapter"))
            throw Invalid("init_weights", $"is \"{InitWeights}\"; expected \"bert\" or \"mam_adapter\"");
        try { BottleneckActivation.Check(NonLinearity, "adapter_config.json"); }
        catch (PeftSharpException) { throw Invalid("non_linearity", $"is \"{NonLinearity}\"; not a supported activation"); }
        if (TargetModules is { IsAllLinear: true })
            throw Invalid("target_modules", "is \"all-linear\"; LLM-Adapters' bottleneck config takes a list of names or a regex");
    }
}
