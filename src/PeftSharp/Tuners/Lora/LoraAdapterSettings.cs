namespace PeftSharp.Tuners.Lora;

/// <summary>One adapter's hyper-parameters on one layer (after rank_pattern / alpha_pattern are applied).</summary>
public sealed record LoraAdapterSettings(
    int Rank,
    double Alpha,
    double Dropout = 0.0,
    bool UseRsLora = false,
    bool UseDora = false,
    bool LoraBias = false,
    string Init = "true")
{
    /// <summary>LoftQ (init "loftq"): loftq_config's loftq_bits and loftq_iter.</summary>
    public int LoftqBits { get; init; } = 4;
    public int LoftqIter { get; init; } = 1;

    /// <summary>α/r, or α/√r with rsLoRA.</summary>
    public double Scaling => UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;
}
