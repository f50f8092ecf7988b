namespace PeftSharp.Training;

/// <summary>
/// Permutations that depend on the seed alone, on every platform and .NET version: SplitMix64 (Steele, Lea and
/// Flood) drives a Fisher–Yates shuffle. System.Random is avoided because its seeded sequence is not promised to
/// stay the same across .NET releases, and a resumed run must see the same order as the original.
/// </summary>
public static class SeededShuffle
{
    /// <summary>A permutation of 0..count-1 determined by <paramref name="seed"/> alone (the same on every machine).</summary>
    public static int[] Permutation(int count, ulong seed)
    {
        var order = new int[count];
        for (int i = 0; i < count; i++) order[i] = i;
        ulong state = seed;
        for (int i = count - 1; i > 0; i--)
        {
            // Multiply-shift maps 64 random bits to [0, i] with negligible bias for any realistic count.
            int j = (int)((UInt128)Next(ref state) * (ulong)(i + 1) >> 64);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    /// <summary>The seed of epoch <paramref name="epoch"/>'s order: distinct, well-mixed per epoch.</summary>
    public static ulong EpochSeed(ulong seed, long epoch)
    {
        ulong state = seed ^ (0x9E3779B97F4A7C15UL * (ulong)(epoch + 1));
        return Next(ref state);
    }

    internal static ulong Next(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
