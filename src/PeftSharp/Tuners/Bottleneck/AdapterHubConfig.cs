using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// AdapterHub's bottleneck adapter configuration (<c>adapters</c> library, <c>BnConfig</c> and its presets
/// <c>DoubleSeqBnConfig</c> = "houlsby"/"double_seq_bn", <c>SeqBnConfig</c> = "pfeiffer"/"seq_bn", <c>ParBnConfig</c> =
/// "parallel"/"par_bn"), as saved inside adapter_config.json under <c>"config"</c>. The fields are kept as the JSON
/// object they were read from (so fields PeftSharp does not use are written back unchanged) and read through typed
/// accessors with AdapterHub's defaults.
/// </summary>
public sealed class AdapterHubConfig
{
    /// <summary>Every BnConfig field with the base class defaults (mh_adapter, output_adapter, reduction_factor and
    /// non_linearity are required in BnConfig; the presets set them).</summary>
    static JsonObject BaseFields() => new()
    {
        ["architecture"] = null,
        ["original_ln_before"] = false,
        ["original_ln_after"] = true,
        ["ln_before"] = false,
        ["ln_after"] = false,
        ["init_weights"] = "bert",
        ["init_weights_seed"] = null,
        ["is_parallel"] = false,
        ["scaling"] = 1.0,
        ["use_gating"] = false,
        ["residual_before_ln"] = true,
        ["adapter_residual_before_ln"] = false,
        ["inv_adapter"] = null,
        ["inv_adapter_reduction_factor"] = null,
        ["cross_adapter"] = false,
        ["leave_out"] = new JsonArray(),
        ["dropout"] = 0.0,
        ["phm_layer"] = false,
        ["phm_dim"] = 4,
        ["factorized_phm_W"] = true,
        ["shared_W_phm"] = false,
        ["shared_phm_rule"] = true,
        ["factorized_phm_rule"] = false,
        ["phm_c_init"] = "normal",
        ["phm_init_range"] = 0.0001,
        ["learn_phm"] = true,
        ["hypercomplex_nonlinearity"] = "glorot-uniform",
        ["phm_rank"] = 1,
        ["phm_bias"] = true,
        ["stochastic_depth"] = 0.0,
    };

    AdapterHubConfig(JsonObject fields, string source)
    {
        Fields = fields;
        Source = source;
        Validate();
    }

    /// <summary>The config object as AdapterHub writes it (all fields).</summary>
    public JsonObject Fields { get; }
    string Source { get; }

    /// <summary>Houlsby et al. 2019 (<c>DoubleSeqBnConfig</c>): serial after attention and after the MLP, swish, reduction factor 16.</summary>
    public static AdapterHubConfig Houlsby(double reductionFactor = 16) => Preset(mh: true, output: true, "swish", reductionFactor, f => { });

    /// <summary>Pfeiffer et al. 2020 (<c>SeqBnConfig</c>): serial after the MLP only, relu, reduction factor 16, original_ln_before.</summary>
    public static AdapterHubConfig Pfeiffer(double reductionFactor = 16) =>
        Preset(mh: false, output: true, "relu", reductionFactor, f => f["original_ln_before"] = true);

    /// <summary>He et al. 2022 (<c>ParBnConfig</c>): parallel beside the MLP, relu, reduction factor 2, scaling 4.0, mam_adapter init.</summary>
    public static AdapterHubConfig Parallel(double reductionFactor = 2, double scaling = 4.0) =>
        Preset(mh: false, output: true, "relu", reductionFactor, f =>
        {
            f["init_weights"] = "mam_adapter";
            f["is_parallel"] = true;
            f["scaling"] = scaling;
        });

    /// <summary>The preset AdapterHub registers under <paramref name="name"/> (houlsby, double_seq_bn, pfeiffer, seq_bn, parallel, par_bn, scaled_parallel, scaled_par_bn).</summary>
    public static AdapterHubConfig FromPresetName(string name) => name switch
    {
        "houlsby" or "double_seq_bn" => Houlsby(),
        "pfeiffer" or "seq_bn" => Pfeiffer(),
        "parallel" or "par_bn" => Parallel(),
        "scaled_parallel" or "scaled_par_bn" => Preset(mh: false, output: true, "relu", 2, f =>
        {
            f["init_weights"] = "mam_adapter";
            f["is_parallel"] = true;
            f["scaling"] = "learned";
        }),
        _ => throw new PeftSharpException($"AdapterHub preset \"{name}\" is not a bottleneck adapter PeftSharp knows (expected houlsby, pfeiffer, parallel, scaled_parallel or their seq_bn names)"),
    };

    static AdapterHubConfig Preset(bool mh, bool output, string nonLinearity, double reductionFactor, Action<JsonObject> tweak)
    {
        var f = BaseFields();
        f["mh_adapter"] = mh;
        f["output_adapter"] = output;
        f["non_linearity"] = nonLinearity;
        f["reduction_factor"] = reductionFactor == Math.Floor(reductionFactor) ? JsonValue.Create((int)reductionFactor) : JsonValue.Create(reductionFactor);
        tweak(f);
        return new AdapterHubConfig(f, "AdapterHub config");
    }

    /// <summary>A copy with some fields replaced (AdapterHub's <c>config.replace(...)</c>).</summary>
    public AdapterHubConfig With(params (string Field, JsonNode? Value)[] changes)
    {
        var f = (JsonObject)Fields.DeepClone();
        foreach (var (field, value) in changes) f[field] = value?.DeepClone();
        return new AdapterHubConfig(f, Source);
    }

    /// <summary>Reads a config object (the <c>"config"</c> member of adapter_config.json); missing fields take BnConfig's defaults.</summary>
    public static AdapterHubConfig FromJson(JsonObject config, string source)
    {
        var f = BaseFields();
        foreach (var (k, v) in config) f[k] = v?.DeepClone();
        return new AdapterHubConfig(f, source);
    }

    // ---------------------------------------------------------------- typed accessors

    /// <summary><c>mh_adapter</c>: an adapter after the attention sub-layer.</summary>
    public bool MhAdapter => Bool("mh_adapter");
    /// <summary><c>output_adapter</c>: an adapter after the feed-forward sub-layer.</summary>
    public bool OutputAdapter => Bool("output_adapter");
    /// <summary><c>non_linearity</c>, lower-cased (e.g. relu, swish, gelu).</summary>
    public string NonLinearity => Str("non_linearity")!.ToLowerInvariant();
    /// <summary><c>original_ln_before</c>: apply the block's own residual connection and LayerNorm before the adapter.</summary>
    public bool OriginalLnBefore => Bool("original_ln_before");
    /// <summary><c>original_ln_after</c>: apply the block's own residual connection and LayerNorm after the adapter.</summary>
    public bool OriginalLnAfter => Bool("original_ln_after");
    /// <summary><c>ln_before</c>: the adapter has its own LayerNorm before its down-projection.</summary>
    public bool LnBefore => Bool("ln_before");
    /// <summary><c>ln_after</c>: the adapter has its own LayerNorm after its up-projection.</summary>
    public bool LnAfter => Bool("ln_after");
    /// <summary><c>init_weights</c>: how the projections are initialised (default "bert").</summary>
    public string InitWeights => Str("init_weights") ?? "bert";
    /// <summary><c>is_parallel</c>: the adapter runs beside the sub-layer (its output is added) rather than after it.</summary>
    public bool IsParallel => Bool("is_parallel");
    /// <summary><c>adapter_residual_before_ln</c>: take the adapter's residual before its own LayerNorm.</summary>
    public bool AdapterResidualBeforeLn => Bool("adapter_residual_before_ln");
    /// <summary><c>dropout</c> on the adapter's input.</summary>
    public double Dropout => Num("dropout");
    /// <summary><c>leave_out</c>: layer indices that get no adapter.</summary>
    public IReadOnlyList<int> LeaveOut => Fields["leave_out"] is JsonArray a ? a.Select(n => (int)ToDouble(n!)).ToList() : [];

    /// <summary><c>residual_before_ln</c>: true, false or "post_add".</summary>
    public string ResidualBeforeLn => Fields["residual_before_ln"] switch
    {
        JsonValue v when v.GetValueKind() == JsonValueKind.True => "true",
        JsonValue v when v.GetValueKind() == JsonValueKind.False => "false",
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
        _ => "invalid",
    };

    /// <summary><c>"constant"</c>, <c>"learned"</c> (one scalar) or <c>"channel"</c> (one per hidden unit).</summary>
    public string ScalingKind => Fields["scaling"] is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : "constant";
    /// <summary>The constant scaling factor (<c>scaling</c> as a number); 1 when the scaling is learned.</summary>
    public double ScalingValue => ScalingKind == "constant" ? Num("scaling") : 1.0;

    /// <summary>AdapterHub's bottleneck width for a layer: <c>int(hidden_size // reduction_factor)</c>, at least 1
    /// (the reduction factor may be a mapping from layer index to factor with a "default").</summary>
    public int BottleneckSize(int hiddenSize, int layer)
    {
        double rf;
        if (Fields["reduction_factor"] is JsonObject map)
        {
            var node = map[layer.ToString(System.Globalization.CultureInfo.InvariantCulture)] ?? map["default"]
                ?? throw Error("reduction_factor", $"has no entry for layer {layer} and no \"default\"");
            rf = ToDouble(node);
        }
        else rf = Num("reduction_factor");
        return Math.Max(1, (int)Math.Floor(hiddenSize / rf));
    }

    // ---------------------------------------------------------------- checks

    void Validate()
    {
        if (Fields["architecture"] is JsonValue arch && arch.GetValueKind() == JsonValueKind.String && arch.GetValue<string>() != "bottleneck")
            throw Error("architecture", $"is \"{arch.GetValue<string>()}\"; only bottleneck adapters are read here");
        RequireBool("mh_adapter");
        RequireBool("output_adapter");
        if (!MhAdapter && !OutputAdapter) throw Error("mh_adapter", "and output_adapter are both false: the adapter has no place");
        if (Str("non_linearity") is not { } nl) throw Error("non_linearity", "is missing; expected an activation name");
        try { BottleneckActivation.Check(nl.ToLowerInvariant(), Source); }
        catch (PeftSharpException) { throw Error("non_linearity", $"is \"{nl}\"; not a supported activation"); }
        switch (Fields["reduction_factor"])
        {
            case JsonValue v when v.GetValueKind() == JsonValueKind.Number:
                if (ToDouble(v) <= 0) throw Error("reduction_factor", "must be positive");
                break;
            case JsonObject m:
                foreach (var (k, v) in m)
                    if (v is not JsonValue nv || nv.GetValueKind() != JsonValueKind.Number || ToDouble(nv) <= 0)
                        throw Error("reduction_factor", $"entry \"{k}\" must be a positive number");
                break;
            default: throw Error("reduction_factor", "must be a number or a mapping from layer index to number");
        }
        foreach (var b in new[] { "original_ln_before", "original_ln_after", "ln_before", "ln_after", "is_parallel", "adapter_residual_before_ln", "use_gating", "phm_layer" })
            RequireBool(b);
        if (InitWeights is not ("bert" or "mam_adapter" or "houlsby")) throw Error("init_weights", $"is \"{InitWeights}\"; expected bert, mam_adapter or houlsby");
        if (ScalingKind is not ("constant" or "learned" or "channel")) throw Error("scaling", $"is \"{ScalingKind}\"; expected a number, \"learned\" or \"channel\"");
        if (ScalingKind == "constant" && Fields["scaling"] is not JsonValue { } sv) throw Error("scaling", "must be a number, \"learned\" or \"channel\"");
        if (ResidualBeforeLn is not ("true" or "false" or "post_add")) throw Error("residual_before_ln", "must be true, false or \"post_add\"");
        // AdapterHub sets the "post_add" residual only where it applies the model's own layer norm, which pre-norm
        // models (GPT-2, Llama) never pass to the adapter: there it fails, so it is refused here.
        if (ResidualBeforeLn == "post_add" && !IsParallel)
            throw Error("residual_before_ln", "is \"post_add\", which AdapterHub does not define for pre-norm models (GPT-2, Llama)");
        if (Dropout is < 0 or >= 1) throw Error("dropout", "must be a probability in [0, 1)");
        if (Bool("use_gating")) throw Error("use_gating", "is true; gated adapters (UniPELT) are not supported");
        if (Bool("phm_layer")) throw Error("phm_layer", "is true; PHM (Compacter) layers are not supported");
        if (Fields["inv_adapter"] is JsonValue inv && inv.GetValueKind() == JsonValueKind.String)
            throw Error("inv_adapter", $"is \"{inv.GetValue<string>()}\"; invertible adapters are not supported");
        if (Fields["stochastic_depth"] is JsonValue sd && sd.GetValueKind() == JsonValueKind.Number && ToDouble(sd) > 0)
            throw Error("stochastic_depth", "is positive; stochastic depth is not supported");
        if (Fields["leave_out"] is JsonNode lo && (lo is not JsonArray arr || arr.Any(n => n is not JsonValue nv || nv.GetValueKind() != JsonValueKind.Number)))
            throw Error("leave_out", "must be a list of layer indexes");
    }

    void RequireBool(string field)
    {
        if (Fields[field] is not JsonValue v || v.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False))
            throw Error(field, "must be true or false");
    }

    bool Bool(string field) => Fields[field] is JsonValue v && v.GetValueKind() == JsonValueKind.True;
    string? Str(string field) => Fields[field] is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    /// <summary>A JSON number as a double, whether parsed from text or created from a CLR int or double.</summary>
    static double ToDouble(JsonNode n) =>
        n.AsValue().TryGetValue<double>(out var d) ? d
        : n.AsValue().TryGetValue<int>(out var i) ? i
        : n.AsValue().TryGetValue<long>(out var l) ? l
        : n.AsValue().GetValue<JsonElement>().GetDouble();

    double Num(string field) => Fields[field] is JsonValue v && v.GetValueKind() == JsonValueKind.Number
        ? ToDouble(v)
        : throw Error(field, "must be a number");

    PeftSharpException Error(string field, string problem) => new($"{Source}: field 'config.{field}' {problem}");
}
