using System.Text.Json.Serialization;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tuners.DyLora;

/// <summary>
/// DyLoRA (Valipour et al., 2022): a LoRA adapter of rank r_max = <c>r</c> trained so that every rank
/// b ∈ [r_min, r_max] works on its own. On disk it is a PEFT LoRA config (<c>peft_type: "LORA"</c>) with our
/// extra fields beside PEFT's; at b = r_max it is exactly that LoRA (scaling α/r), so Python PEFT loads it as is.
/// </summary>
public sealed class DyLoraConfig : LoraConfig
{
    /// <summary>Smallest rank sampled during training.</summary>
    [JsonPropertyName("dylora_r_min")] public int RMin { get; set; } = 1;

    /// <summary>"uniform" (default) or "geometric" (favours low ranks).</summary>
    [JsonPropertyName("dylora_distribution")] public string Distribution { get; set; } = "uniform";

    /// <summary>Success probability p of the geometric distribution: P(b = r_min + k) ∝ (1 − p)^k · p.</summary>
    [JsonPropertyName("dylora_geometric_p")] public double GeometricP { get; set; } = 0.15;

    /// <summary>Frozen mode (the reference code's default): only row b of A and column b of B get gradient.</summary>
    [JsonPropertyName("dylora_frozen")] public bool Frozen { get; set; } = true;

    /// <summary>Reads a DyLoRA adapter folder's <c>adapter_config.json</c>.</summary>
    public static new DyLoraConfig Load(string adapterDir) => LoadFromDirectory<DyLoraConfig>(adapterDir, false);

    /// <summary>Whether an adapter folder's config carries DyLoRA fields.</summary>
    public static bool IsDyLora(string adapterDir)
    {
        var path = Path.Combine(adapterDir, ConfigFileName);
        return File.Exists(path) && File.ReadAllText(path).Contains("\"dylora_r_min\"", StringComparison.Ordinal);
    }

    /// <summary>Checks the DyLoRA fields.</summary>
    /// <exception cref="PeftSharpException">dylora_r_min outside 1..r, or an unknown distribution.</exception>
    public void Validate()
    {
        if (RMin < 1 || RMin > R) throw new PeftSharpException($"dylora_r_min must be in 1..r ({R}), got {RMin}");
        if (Distribution is not ("uniform" or "geometric"))
            throw new PeftSharpException($"dylora_distribution must be \"uniform\" or \"geometric\", got \"{Distribution}\"");
        if (GeometricP is <= 0 or > 1) throw new PeftSharpException($"dylora_geometric_p must be in (0, 1], got {GeometricP}");
    }
}
