namespace PeftSharp.Tuners.DyLora;

/// <summary>
/// Draws DyLoRA's rank b for each training step from [r_min, r_max]: uniform, or a geometric distribution
/// truncated to the range, P(b = r_min + k) = (1 − p)^k·p / Z. Seeded, so a run (and its resume) repeats.
/// </summary>
public sealed class RankSampler
{
    readonly double[] cumulative;
    readonly int rMin;
    Random random;

    /// <summary>
    /// Draws ranks in <paramref name="rMin"/>..<paramref name="rMax"/>, uniformly or geometrically with parameter <paramref name="p"/>.
    /// </summary>
    /// <exception cref="PeftSharpException">The ranks are not 1 ≤ r_min ≤ r_max.</exception>
    public RankSampler(int rMin, int rMax, string distribution = "uniform", double p = 0.15, int seed = 0)
    {
        if (rMin < 1 || rMax < rMin) throw new PeftSharpException($"DyLoRA ranks: need 1 ≤ r_min ≤ r_max, got {rMin}..{rMax}");
        this.rMin = rMin;
        var weights = Enumerable.Range(0, rMax - rMin + 1)
            .Select(k => distribution == "geometric" ? Math.Pow(1 - p, k) * p : 1.0).ToArray();
        double total = weights.Sum();
        cumulative = new double[weights.Length];
        double acc = 0;
        for (int i = 0; i < weights.Length; i++) cumulative[i] = (acc += weights[i] / total);
        random = new Random(seed);
        Seed = seed;
    }

    /// <summary>The sampler's seed.</summary>
    public int Seed { get; }

    /// <summary>Probability of each rank r_min..r_max.</summary>
    public IReadOnlyList<double> Probabilities => cumulative.Select((c, i) => i == 0 ? c : c - cumulative[i - 1]).ToArray();

    /// <summary>The next rank from the sampler's own generator.</summary>
    public int Next() => RankFor(random.NextDouble());

    /// <summary>
    /// The rank for a given training step, drawn from a generator seeded by (seed, step) alone: the same step always
    /// gets the same rank, so a resumed run repeats the uninterrupted one exactly.
    /// </summary>
    public int ForStep(long step) => RankFor(new Random(Mix(Seed, step)).NextDouble());

    /// <summary>SplitMix64 of (seed, step) folded to an int: fixed across processes (unlike HashCode).</summary>
    static int Mix(int seed, long step)
    {
        ulong z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)step + 0x632BE59BD9B4E019UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return (int)((z ^ (z >> 31)) & 0x7FFFFFFF);
    }

    int RankFor(double u)
    {
        int i = Array.FindIndex(cumulative, c => u < c);
        return rMin + (i < 0 ? cumulative.Length - 1 : i);
    }

    /// <summary>Restarts the stream so that the next draw is the (draws+1)-th of a fresh sampler (for resume).</summary>
    public void Skip(long draws)
    {
        random = new Random(Seed);
        for (long i = 0; i < draws; i++) random.NextDouble();
    }
}
