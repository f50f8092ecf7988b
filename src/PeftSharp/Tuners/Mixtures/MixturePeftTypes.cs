namespace PeftSharp.Tuners.Mixtures;

/// <summary>
/// The <c>peft_type</c> values of the mixture-of-experts methods. MIXLORA is the reference MixLoRA code's own value
/// (TUDB-Labs/MixLoRA); PEFT has no MoLoRA or MoV, so MOLORA and MOV are PeftSharp's names (docs/mixtures.md).
/// </summary>
public static class MixturePeftTypes
{
    /// <summary>MixLoRA (Li et al. 2024): sparse top-k LoRA experts on the feed-forward network.</summary>
    public const string MixLora = "MIXLORA";
    /// <summary>MoLoRA (Zadouri et al. 2023): dense soft mixture of LoRA experts on target linears.</summary>
    public const string MoLora = "MOLORA";
    /// <summary>MoV (Zadouri et al. 2023): dense soft mixture of (IA)³ vectors on target linears.</summary>
    public const string MoV = "MOV";
}
