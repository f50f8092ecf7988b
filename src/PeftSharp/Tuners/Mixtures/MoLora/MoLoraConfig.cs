using System.Text.Json.Serialization;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Mixtures.MoLora;

/// <summary>
/// MoLoRA (Zadouri et al. 2023, "Pushing Mixture of Experts to the Limit"), <c>peft_type: "MOLORA"</c> (PeftSharp's own
/// format; the field names follow PEFT's LoraConfig): on each target linear, num_experts LoRA experts mixed per token by
/// a softmax router that reads the layer's input.
/// </summary>
public sealed class MoLoraConfig : PeftConfig
{
    /// <summary>A MoLoRA config with the defaults (8 experts of rank 8, alpha 16).</summary>
    public MoLoraConfig() : base(MixturePeftTypes.MoLora) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => MixturePeftTypes.MoLora;

    /// <summary>Rank of each expert. Default 8.</summary>
    [JsonPropertyName("r")]
    public int R { get; set; } = 8;

    /// <summary>lora_alpha (scaling alpha / r). Default 16.</summary>
    [JsonPropertyName("lora_alpha")]
    public double LoraAlpha { get; set; } = 16;

    /// <summary>Dropout on the experts' input while training. Default 0.</summary>
    [JsonPropertyName("lora_dropout")]
    [PythonFloat]
    public double LoraDropout { get; set; }

    /// <summary>Rank-stabilised scaling alpha / √r. Default false.</summary>
    [JsonPropertyName("use_rslora")]
    public bool UseRsLora { get; set; }

    /// <summary>Modules to adapt (names, a regex or "all-linear"); null: keys, values and the feed-forward output.</summary>
    [JsonPropertyName("target_modules")]
    public TargetModules? TargetModules { get; set; }

    /// <summary>Experts per target layer. Default 8.</summary>
    [JsonPropertyName("num_experts")]
    public int NumExperts { get; set; } = 8;

    /// <summary>Standard deviation of the router weights at initialisation. Default 0.02.</summary>
    [JsonPropertyName("router_init_range")]
    [PythonFloat]
    public double RouterInitRange { get; set; } = 0.02;

    /// <summary>Reads <c>adapterDir/adapter_config.json</c> (peft_type must be "MOLORA").</summary>
    public static MoLoraConfig Load(string adapterDir) => LoadFromDirectory<MoLoraConfig>(adapterDir, false);

    /// <summary>alpha / r, or alpha / √r with use_rslora.</summary>
    [JsonIgnore]
    public double Scaling => UseRsLora ? LoraAlpha / Math.Sqrt(R) : LoraAlpha / R;

    /// <summary>Checks the fields, as one-line errors naming the field.</summary>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (R < 1) throw Invalid("r", $"is {R}; it must be at least 1");
        if (!(LoraAlpha > 0)) throw Invalid("lora_alpha", $"is {LoraAlpha}; it must be above 0");
        if (LoraDropout < 0 || LoraDropout >= 1) throw Invalid("lora_dropout", $"is {LoraDropout}; it must be in [0, 1)");
        if (NumExperts < 1) throw Invalid("num_experts", $"is {NumExperts}; it must be at least 1");
        if (RouterInitRange < 0) throw Invalid("router_init_range", $"is {RouterInitRange}; it must be at least 0");
    }
}
