using System.Text.Json.Serialization;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>
/// PEFT's <c>AdaLoraConfig</c> (a <see cref="LoraConfig"/> with <c>peft_type: "ADALORA"</c>): every field with PEFT's
/// JSON name and default. Training has three phases: <see cref="Tinit"/> steps at the initial budget, a budgeting
/// phase in which the total rank falls on a cubic curve from <c>init_r × layers</c> to <c>target_r × layers</c>
/// (until step <c>total_step − tfinal</c>), and <see cref="Tfinal"/> steps with the final allocation fixed.
/// <c>r</c> is not used (<see cref="InitR"/> is the starting rank); <c>lora_alpha</c> is the numerator of the scaling.
/// </summary>
public sealed class AdaLoraConfig : LoraConfig
{
    /// <summary>An AdaLoRA config with PEFT's defaults (peft_type ADALORA).</summary>
    public AdaLoraConfig() : base(PeftTypes.AdaLora) { }

    /// <inheritdoc />
    [JsonIgnore]
    public override string ExpectedPeftType => PeftTypes.AdaLora;

    /// <summary>The target average rank per adapted matrix. Default 8.</summary>
    [JsonPropertyName("target_r")]
    public int TargetR { get; set; } = 8;

    /// <summary>The initial rank of every adapted matrix. Default 12.</summary>
    [JsonPropertyName("init_r")]
    public int InitR { get; set; } = 12;

    /// <summary>Steps of initial fine-tuning before any rank is pruned. Default 0.</summary>
    [JsonPropertyName("tinit")]
    public int Tinit { get; set; }

    /// <summary>Steps of final fine-tuning with the allocation fixed. Default 0.</summary>
    [JsonPropertyName("tfinal")]
    public int Tfinal { get; set; }

    /// <summary>Steps between two budget allocations in the budgeting phase. Default 1.</summary>
    [JsonPropertyName("deltaT")]
    public int DeltaT { get; set; } = 1;

    /// <summary>EMA coefficient of the sensitivity |p·∇p|. Default 0.85.</summary>
    [JsonPropertyName("beta1")]
    [PythonFloat]
    public double Beta1 { get; set; } = 0.85;

    /// <summary>EMA coefficient of the sensitivity's uncertainty. Default 0.85.</summary>
    [JsonPropertyName("beta2")]
    [PythonFloat]
    public double Beta2 { get; set; } = 0.85;

    /// <summary>Weight of the orthogonal regulariser added to the training loss. Default 0.5.</summary>
    [JsonPropertyName("orth_reg_weight")]
    [PythonFloat]
    public double OrthRegWeight { get; set; } = 0.5;

    /// <summary>Total training steps; required (the budget schedule needs it).</summary>
    [JsonPropertyName("total_step")]
    public int? TotalStep { get; set; }

    /// <summary>
    /// The allocation the rank allocator made: module path + <c>".lora_E"</c> → one flag per singular triplet (true =
    /// kept), <c>init_r</c> flags each. Null until the first allocation. Saved adapters hold only the kept triplets,
    /// and loading shrinks each layer to them (PEFT's <c>resize_modules_by_rank_pattern</c>).
    /// </summary>
    [JsonPropertyName("rank_pattern")]
    public new OrderedDictionary<string, IReadOnlyList<bool>>? RankPattern { get; set; }

    /// <summary>Reads an AdaLoRA <c>adapter_config.json</c>; a <c>peft_type</c> other than "ADALORA" is an error.</summary>
    public static new AdaLoraConfig Load(string adapterDir) => LoadFromDirectory<AdaLoraConfig>(adapterDir, false);

    /// <summary>Reads a config from JSON text; <paramref name="sourceName"/> names it in error messages.</summary>
    public static AdaLoraConfig FromJson(string json, string sourceName = ConfigFileName) =>
        ParseJson<AdaLoraConfig>(json, sourceName, false);

    /// <summary>PEFT's <c>AdaLoraConfig.__post_init__</c> on top of LoRA's.</summary>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (UseDora) throw Invalid("use_dora", "is true, but ADALORA does not support DoRA");
        if (LoftqConfig is { Count: > 0 }) throw Invalid("loftq_config", "is set, but ADALORA does not support LoftQ");
        if (R != 8)
            warnings.Add("Note that `r` is not used in AdaLora and will be ignored.If you intended to set the initial rank, use `init_r` instead.");
        if (TotalStep is not int total || total <= 0)
            throw Invalid("total_step", "must be a number of steps > 0 (AdaLoRA does not work when `total_step` is None)");
        if (OrthRegWeight < 0) throw Invalid("orth_reg_weight", $"should be greater than or equal to 0, got {OrthRegWeight}");
        if (Tinit >= total - Tfinal)
            throw InvalidCombination(
                $"tinit ({Tinit}), tfinal ({Tfinal}) and total_step ({total}) leave no budgeting phase; decrease tfinal/tinit or increase total_step");
    }
}
