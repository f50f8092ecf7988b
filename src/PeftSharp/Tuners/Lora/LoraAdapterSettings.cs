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
    /// <summary>LoftQ (init "loftq"): alternating steps of loftq_iter (default 1).</summary>
    public int LoftqIter { get; init; } = 1;

    /// <summary>
    /// QA-LoRA (PEFT's use_qalora): the input is average-pooled in groups of this many columns before lora_A, so
    /// lora_A is [r, in / group]; null for plain LoRA.
    /// </summary>
    public int? QaloraGroupSize { get; init; }

    /// <summary>α/r, or α/√r with rsLoRA.</summary>
    public double Scaling => ScalingAt(Rank);

    /// <summary>The scaling when only the first <paramref name="rank"/> rank-one components are used (DyLoRA: α/b).</summary>
    public double ScalingAt(int rank) => UseRsLora ? Alpha / Math.Sqrt(rank) : Alpha / rank;
}
