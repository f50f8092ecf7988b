using System.Text.Json.Serialization;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Mixtures.MoV;

/// <summary>
/// MoV, the mixture of (IA)³ vectors (Zadouri et al. 2023), <c>peft_type: "MOV"</c> (PeftSharp's own format; the field
/// names follow PEFT's IA3Config): on each target linear, num_experts scaling vectors merged per token by a softmax router,
/// <c>l = Σ_e w_e·l_e</c>, which then scales the layer's output (or, for feed-forward targets, its input).
/// </summary>
public sealed class MoVConfig : PeftConfig
{
    /// <summary>A MoV config with the defaults (8 experts).</summary>
    public MoVConfig() : base(MixturePeftTypes.MoV) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => MixturePeftTypes.MoV;

    /// <summary>Modules to adapt (names, a regex or "all-linear"); null: keys, values and the feed-forward output.</summary>
    [JsonPropertyName("target_modules")]
    public TargetModules? TargetModules { get; set; }

    /// <summary>Targets whose input is scaled instead of their output (PEFT's (IA)³ rule); null: the model type's default.</summary>
    [JsonPropertyName("feedforward_modules")]
    public TargetModules? FeedforwardModules { get; set; }

    /// <summary>Experts (vectors) per target layer. Default 8.</summary>
    [JsonPropertyName("num_experts")]
    public int NumExperts { get; set; } = 8;

    /// <summary>Standard deviation of the router weights at initialisation. Default 0.02.</summary>
    [JsonPropertyName("router_init_range")]
    [PythonFloat]
    public double RouterInitRange { get; set; } = 0.02;

    /// <summary>Start every vector at ones (the identity, as (IA)³); false draws them near one, for tests. Default true.</summary>
    [JsonPropertyName("init_ia3_weights")]
    public bool InitIa3Weights { get; set; } = true;

    /// <summary>Reads <c>adapterDir/adapter_config.json</c> (peft_type must be "MOV").</summary>
    public static MoVConfig Load(string adapterDir) => LoadFromDirectory<MoVConfig>(adapterDir, false);

    /// <summary>Checks the fields, as one-line errors naming the field.</summary>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (NumExperts < 1) throw Invalid("num_experts", $"is {NumExperts}; it must be at least 1");
        if (RouterInitRange < 0) throw Invalid("router_init_range", $"is {RouterInitRange}; it must be at least 0");
    }
}
