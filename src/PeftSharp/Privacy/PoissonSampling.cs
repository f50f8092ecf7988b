using PeftSharp.Training;

namespace PeftSharp.Privacy;

/// <summary>
/// DP-SGD's batches: every example joins step s's batch independently with probability q, so batch sizes vary
/// (and may be 0) — the sampling the RDP accountant's subsampled Gaussian mechanism assumes. Each step's batch is a
/// pure function of (seed, step) (SplitMix64, as <see cref="SeededShuffle"/>), so resumed runs repeat exactly.
/// </summary>
public static class PoissonSampling
{
    /// <summary>
    /// The indices of a Poisson-sampled batch: each of <paramref name="count"/> examples is in it with probability <paramref name="q"/>, independently; the same seed and step give the same batch.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="q"/> is not in (0, 1].</exception>
    public static int[] Batch(int count, double q, ulong seed, long step)
    {
        if (!(q > 0 && q <= 1)) throw new ArgumentOutOfRangeException(nameof(q), q, "the sampling rate must be in (0, 1]");
        ulong state = SeededShuffle.EpochSeed(seed ^ 0xD1B54A32D192ED03UL, step);
        var batch = new List<int>();
        for (int i = 0; i < count; i++)
        {
            double u = (SeededShuffle.Next(ref state) >> 11) * (1.0 / (1UL << 53));   // uniform in [0, 1)
            if (u < q) batch.Add(i);
        }
        return batch.ToArray();
    }
}
