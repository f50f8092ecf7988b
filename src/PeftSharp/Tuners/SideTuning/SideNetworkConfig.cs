using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.SideTuning;

/// <summary>The values of <c>side_init</c>: how a side network's blocks start.</summary>
public static class SideInit
{
    /// <summary>Structured pruning of the backbone's blocks (LST): keep the units with the largest weight norms (default).</summary>
    public const string Pruned = "pruned";
    /// <summary>Random weights (N(0, 0.02) matrices, unit norms, zero biases).</summary>
    public const string Random = "random";

    /// <summary>Every side_init value.</summary>
    public static IReadOnlyList<string> All { get; } = [Pruned, Random];
}

/// <summary>
/// What side tuning and ladder side tuning share (PeftSharp's own format; PEFT has no side-tuning method): a side
/// network of the backbone's family whose widths are the backbone's divided by <see cref="ReductionFactor"/>.
/// </summary>
public abstract class SideNetworkConfig : PeftConfig
{
    /// <summary>Sets the peft_type; called by the two config classes.</summary>
    protected SideNetworkConfig(string peftType) : base(peftType) { }

    /// <summary>
    /// r: the side network's hidden size, attention head size and MLP size are the backbone's divided by r (default 8).
    /// The head count stays; hidden size and head size must be divisible by r.
    /// </summary>
    [JsonPropertyName("reduction_factor")]
    public int ReductionFactor { get; set; } = 8;

    /// <summary><c>pruned</c> (default: structured pruning of the backbone's blocks, as LST) or <c>random</c>.</summary>
    [JsonPropertyName("side_init")]
    public string SideInitMode { get; set; } = SideInit.Pruned;

    /// <summary>Weight norm that ranks units when pruning: <c>l1</c> (default, LST's L1 strategy) or <c>l2</c>.</summary>
    [JsonPropertyName("pruning_norm")]
    public string PruningNorm { get; set; } = "l1";

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (ReductionFactor < 1) throw Invalid("reduction_factor", $"is {ReductionFactor}; expected a positive integer");
        if (!SideInit.All.Contains(SideInitMode)) throw Invalid("side_init", $"is \"{SideInitMode}\"; expected one of {string.Join(", ", SideInit.All)}");
        if (PruningNorm is not ("l1" or "l2")) throw Invalid("pruning_norm", $"is \"{PruningNorm}\"; expected l1 or l2");
    }

    /// <summary>Checks that the model's widths divide by the reduction factor; errors name <paramref name="source"/>.</summary>
    public void CheckFits(ModelConfig model, string source)
    {
        int r = ReductionFactor;
        if (model.Hidden % r != 0 || model.HeadDim % r != 0 || model.Inner % r != 0)
            throw new PeftSharpException($"{source}: field 'reduction_factor' is {r} but this {model.ModelType} model's hidden size {model.Hidden}, head size {model.HeadDim} and MLP size {model.Inner} must all be divisible by it");
        if (!model.IsGpt2 && (model.HeadDim / r) % 2 != 0)
            throw new PeftSharpException($"{source}: field 'reduction_factor' is {r}; the side head size {model.HeadDim / r} must be even for rotary embeddings");
    }
}

/// <summary>
/// Ladder side tuning (Sung et al. 2022, <c>peft_type: "LST"</c>): a side network fed after every backbone block by a
/// gated, down-projected tap, side_i = μ_i·down_i(h_i) + (1 − μ_i)·side_{i−1} with μ_i = sigmoid(α_i / T); its output,
/// projected up to the hidden size, is added to the backbone's final hidden states. See docs/side-tuning.md.
/// </summary>
public sealed class LstConfig : SideNetworkConfig
{
    /// <summary>An LST config with the defaults (r 8, α 0, T 0.1, pruned init).</summary>
    public LstConfig() : base(SideTuningPeftTypes.Lst) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => SideTuningPeftTypes.Lst;

    /// <summary>Initial gate logits α_i (LST's gate_alpha, default 0: μ = 0.5).</summary>
    [JsonPropertyName("gate_alpha")]
    public double GateAlpha { get; set; }

    /// <summary>Gate temperature T in μ_i = sigmoid(α_i / T) (LST's gate_T, default 0.1).</summary>
    [JsonPropertyName("gate_temperature")]
    public double GateTemperature { get; set; } = 0.1;

    /// <summary>Reads an LST adapter folder's <c>adapter_config.json</c>.</summary>
    public static LstConfig Load(string adapterDir) => LoadFromDirectory<LstConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static LstConfig FromJson(string json, string sourceName = ConfigFileName) => ParseJson<LstConfig>(json, sourceName, false);

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (!(GateTemperature > 0) || !double.IsFinite(GateTemperature)) throw Invalid("gate_temperature", $"is {GateTemperature}; expected a positive number");
        if (!double.IsFinite(GateAlpha)) throw Invalid("gate_alpha", $"is {GateAlpha}; expected a finite number");
    }
}

/// <summary>
/// Side tuning (Zhang et al. 2020, <c>peft_type: "SIDE_TUNING"</c>): a side network reading the input embeddings only;
/// the output is α·base + (1 − α)·side with a learned blend α = sigmoid(blend). See docs/side-tuning.md.
/// </summary>
public sealed class SideTuningConfig : SideNetworkConfig
{
    /// <summary>A side-tuning config with the defaults (r 8, α 0.9 at the start, pruned init).</summary>
    public SideTuningConfig() : base(SideTuningPeftTypes.SideTuning) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => SideTuningPeftTypes.SideTuning;

    /// <summary>The base network's weight α at the start, in (0, 1) (default 0.9).</summary>
    [JsonPropertyName("blend_init")]
    public double BlendInit { get; set; } = 0.9;

    /// <summary>Reads a side-tuning adapter folder's <c>adapter_config.json</c>.</summary>
    public static SideTuningConfig Load(string adapterDir) => LoadFromDirectory<SideTuningConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static SideTuningConfig FromJson(string json, string sourceName = ConfigFileName) => ParseJson<SideTuningConfig>(json, sourceName, false);

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (!(BlendInit > 0 && BlendInit < 1)) throw Invalid("blend_init", $"is {BlendInit}; expected a number strictly between 0 and 1");
    }
}

/// <summary>The peft_type values of the side-network methods (PeftSharp's own; PEFT has none).</summary>
public static class SideTuningPeftTypes
{
    /// <summary>Ladder side tuning.</summary>
    public const string Lst = "LST";
    /// <summary>Plain side tuning.</summary>
    public const string SideTuning = "SIDE_TUNING";
}
