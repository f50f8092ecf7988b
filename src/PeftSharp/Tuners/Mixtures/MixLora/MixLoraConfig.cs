using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Mixtures.MixLora;

/// <summary>
/// The reference MixLoRA code's <c>MixLoraConfig</c> (TUDB-Labs/MixLoRA, <c>mixlora/config.py</c>;
/// <c>peft_type: "MIXLORA"</c>), every field with its JSON name and the default its <c>from_config</c> uses.
/// One LoRA (r, lora_alpha, lora_dropout) on the attention projections named in target_modules, and on the
/// feed-forward projections named there <c>num_experts</c> LoRA experts (optionally sized by <c>expert_lora</c>)
/// chosen per token by a top-k router.
/// </summary>
public sealed class MixLoraConfig : PeftConfig
{
    /// <summary>A MixLoRA config with the reference code's defaults (8 experts, top-2, aux loss coefficient 0.001).</summary>
    public MixLoraConfig() : base(MixturePeftTypes.MixLora) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => MixturePeftTypes.MixLora;

    /// <summary>LoRA rank of the attention LoRA (and of the experts unless expert_lora sets its own). Default 8.</summary>
    [JsonPropertyName("r")]
    public int R { get; set; } = 8;

    /// <summary>lora_alpha (the scaling is alpha / r, or alpha / √r with use_rslora). Default 16.</summary>
    [JsonPropertyName("lora_alpha")]
    public int LoraAlpha { get; set; } = 16;

    /// <summary>Dropout on the LoRA input while training. Default 0.05 (the reference requires it to be above 0).</summary>
    [JsonPropertyName("lora_dropout")]
    [PythonFloat]
    public double LoraDropout { get; set; } = 0.05;

    /// <summary>
    /// Projection names (the last part of the module path): attention ones (q_proj, k_proj, v_proj, o_proj; GPT-2's
    /// c_attn, c_proj) get one plain LoRA, feed-forward ones (gate_proj, up_proj, down_proj; GPT-2's c_fc, c_proj)
    /// get the experts. Null: every attention and feed-forward projection of the model.
    /// </summary>
    [JsonPropertyName("target_modules")]
    public TargetModules? TargetModules { get; set; }

    /// <summary>Rank-stabilised scaling alpha / √r. Default false.</summary>
    [JsonPropertyName("use_rslora")]
    public bool UseRsLora { get; set; }

    /// <summary>DoRA experts (not supported by PeftSharp's MixLoRA: must stay false).</summary>
    [JsonPropertyName("use_dora")]
    public bool UseDora { get; set; }

    /// <summary>"original" (kaiming-uniform A, as PEFT) or "gaussian" (A ~ N(0, 1/r²)).</summary>
    [JsonPropertyName("lora_init")]
    public string LoraInit { get; set; } = "original";

    /// <summary>Only "mixlora" (top-k routing) is implemented.</summary>
    [JsonPropertyName("routing_strategy")]
    public string RoutingStrategy { get; set; } = "mixlora";

    /// <summary>Experts per layer. Default 8.</summary>
    [JsonPropertyName("num_experts")]
    public int NumExperts { get; set; } = 8;

    /// <summary>Experts each token goes to. Default 2.</summary>
    [JsonPropertyName("top_k")]
    public int TopK { get; set; } = 2;

    /// <summary>Coefficient of the load-balancing loss added to the training loss. Default 0.001 (the reference code's).</summary>
    [JsonPropertyName("router_aux_loss_coef")]
    [PythonFloat]
    public double RouterAuxLossCoef { get; set; } = 0.001;

    /// <summary>Whether training adds the load-balancing loss. Default true.</summary>
    [JsonPropertyName("router_loss")]
    public bool RouterLoss { get; set; } = true;

    /// <summary>Standard deviation of the router weights at initialisation. Default 0.02.</summary>
    [JsonPropertyName("router_init_range")]
    [PythonFloat]
    public double RouterInitRange { get; set; } = 0.02;

    /// <summary>While training, router inputs are multiplied by U(1 − j, 1 + j). Default 0 (off).</summary>
    [JsonPropertyName("jitter_noise")]
    [PythonFloat]
    public double JitterNoise { get; set; }

    /// <summary>The experts' activation (transformers' ACT2FN name); null: the feed-forward network's own.</summary>
    [JsonPropertyName("act_fn")]
    public string? ActFn { get; set; }

    /// <summary>Expert LoRA settings that differ from the attention LoRA's: <c>{"r": …, "lora_alpha": …, "lora_dropout": …}</c>.</summary>
    [JsonPropertyName("expert_lora")]
    public JsonObject? ExpertLora { get; set; }

    /// <summary>Always "none" in the reference code.</summary>
    [JsonPropertyName("bias")]
    public string Bias { get; set; } = "none";

    /// <summary>Reads <c>adapterDir/adapter_config.json</c> (peft_type must be "MIXLORA").</summary>
    public static MixLoraConfig Load(string adapterDir) => LoadFromDirectory<MixLoraConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static MixLoraConfig FromJson(string json, string sourceName = ConfigFileName) => ParseJson<MixLoraConfig>(json, sourceName, false);

    /// <summary>The experts' rank: expert_lora.r, else r.</summary>
    [JsonIgnore]
    public int ExpertR => ExpertInt("r") ?? R;

    /// <summary>The experts' lora_alpha: expert_lora.lora_alpha, else lora_alpha.</summary>
    [JsonIgnore]
    public double ExpertAlpha => ExpertNumber("lora_alpha") ?? LoraAlpha;

    /// <summary>The experts' dropout: expert_lora.lora_dropout, else lora_dropout.</summary>
    [JsonIgnore]
    public double ExpertDropout => ExpertNumber("lora_dropout") ?? LoraDropout;

    int? ExpertInt(string key) => ExpertLora?[key] is JsonValue v && v.TryGetValue<int>(out int i) ? i : null;
    double? ExpertNumber(string key) => ExpertLora?[key] is JsonValue v && v.TryGetValue<double>(out double d) ? d : null;

    /// <summary>alpha / r, or alpha / √r with use_rslora.</summary>
    public double ScalingFor(int r, double alpha) => UseRsLora ? alpha / Math.Sqrt(r) : alpha / r;

    /// <summary>The reference code's checks (MixLoraConfig.check), as one-line errors naming the field.</summary>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (R < 1) throw Invalid("r", $"is {R}; it must be at least 1");
        if (LoraAlpha < 1) throw Invalid("lora_alpha", $"is {LoraAlpha}; it must be at least 1");
        if (LoraDropout < 0 || LoraDropout >= 1) throw Invalid("lora_dropout", $"is {LoraDropout}; it must be in [0, 1)");
        if (NumExperts < 1) throw Invalid("num_experts", $"is {NumExperts}; it must be at least 1");
        if (TopK < 1 || TopK > NumExperts) throw Invalid("top_k", $"is {TopK}; it must be between 1 and num_experts ({NumExperts})");
        if (RouterAuxLossCoef < 0) throw Invalid("router_aux_loss_coef", $"is {RouterAuxLossCoef}; it must be at least 0");
        if (RouterInitRange < 0) throw Invalid("router_init_range", $"is {RouterInitRange}; it must be at least 0");
        if (JitterNoise < 0 || JitterNoise >= 1) throw Invalid("jitter_noise", $"is {JitterNoise}; it must be in [0, 1)");
        if (RoutingStrategy != "mixlora")
            throw Invalid("routing_strategy", $"is \"{RoutingStrategy}\"; PeftSharp implements \"mixlora\" (top-k) only");
        if (LoraInit is not ("original" or "gaussian")) throw Invalid("lora_init", $"is \"{LoraInit}\"; expected \"original\" or \"gaussian\"");
        if (UseDora) throw Invalid("use_dora", "is true; DoRA experts are not implemented");
        if (TargetModules is { IsRegex: true }) throw Invalid("target_modules", "is a regex; MixLoRA takes a list of projection names");
        if (ActFn is not null) Models.Layers.Activations.Check(ActFn, "act_fn");
        if (ExpertLora is not null)
        {
            foreach (var (key, _) in ExpertLora)
                if (key is not ("r" or "lora_alpha" or "lora_dropout" or "use_dora" or "use_rslora" or "lora_init" or "bias" or "task_type" or "base_model_name_or_path"))
                    warnings.Add($"expert_lora field '{key}' is ignored");
            if (ExpertLora["r"] is not null && ExpertInt("r") is not > 0) throw Invalid("expert_lora.r", "must be a positive integer");
            if (ExpertLora["lora_alpha"] is not null && ExpertNumber("lora_alpha") is not > 0) throw Invalid("expert_lora.lora_alpha", "must be a positive number");
            if (ExpertLora["lora_dropout"] is not null && ExpertNumber("lora_dropout") is not (>= 0 and < 1)) throw Invalid("expert_lora.lora_dropout", "must be in [0, 1)");
        }
    }
}
