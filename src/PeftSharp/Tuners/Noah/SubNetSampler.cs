namespace PeftSharp.Tuners.Noah;

/// <summary>
/// Draws NOAH's sub-network for each supernet training step: each size uniformly from its list, from a generator seeded
/// by (seed, step) alone, so a resumed run repeats the uninterrupted one.
/// </summary>
public sealed class SubNetSampler(NoahConfig config, int seed)
{
    /// <summary>The sub-network of training step <paramref name="step"/>.</summary>
    public SubNet ForStep(long step)
    {
        var random = new Random(Mix(seed, step));
        return new SubNet(Pick(config.LoraRanks, random), Pick(config.AdapterDims, random), Pick(config.PromptLengths, random));
    }

    static int Pick(IReadOnlyList<int> values, Random random) => values[random.Next(values.Count)];

    static int Mix(int seed, long step)
    {
        ulong z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)step + 0x632BE59BD9B4E019UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return (int)((z ^ (z >> 31)) & 0x7FFFFFFF);
    }
}
