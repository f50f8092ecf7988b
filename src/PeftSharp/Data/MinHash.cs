using System.IO.Hashing;
using System.Text;

namespace PeftSharp.Data;

/// <summary>
/// MinHash signatures over word shingles and locality-sensitive hashing in bands, to find records whose shingle sets
/// have a Jaccard similarity at or above a threshold without comparing every pair (Broder 1997; the banding as in
/// Leskovec, Rajaraman and Ullman, Mining of Massive Datasets, ch. 3). Candidates found through the bands are then
/// checked with the exact Jaccard similarity of their shingle sets, so the threshold is applied exactly; banding only
/// decides which pairs get checked. Written by hand: no .NET package provides MinHash.
/// </summary>
public sealed class MinHash
{
    const ulong Prime = (1UL << 61) - 1; // Mersenne prime 2^61 − 1
    readonly ulong[] a, b;

    /// <summary>
    /// A MinHash with <paramref name="permutations"/> hash functions over shingles of <paramref name="shingleWords"/> words; bands and rows are chosen for <paramref name="threshold"/>; <paramref name="seed"/> fixes the hash functions.
    /// </summary>
    /// <exception cref="PeftSharpException"><paramref name="threshold"/> is not in (0, 1].</exception>
    public MinHash(int permutations = 128, int shingleWords = 3, double threshold = 0.8, int seed = 1)
    {
        if (permutations < 2) throw new ArgumentOutOfRangeException(nameof(permutations));
        if (threshold is <= 0 or > 1) throw new PeftSharpException($"--threshold: expected a Jaccard similarity in (0, 1], got {threshold}");
        Permutations = permutations;
        ShingleWords = shingleWords;
        Threshold = threshold;
        var random = new Random(seed);
        a = new ulong[permutations];
        b = new ulong[permutations];
        for (int i = 0; i < permutations; i++)
        {
            a[i] = 1 + (ulong)random.NextInt64(1, (long)(Prime - 1));
            b[i] = (ulong)random.NextInt64(0, (long)(Prime - 1));
        }
        (Bands, Rows) = BandsFor(threshold, permutations);
    }

    /// <summary>Number of hash functions, the length of a signature.</summary>
    public int Permutations { get; }
    /// <summary>Words per shingle.</summary>
    public int ShingleWords { get; }
    /// <summary>The Jaccard similarity at or above which two records are near duplicates.</summary>
    public double Threshold { get; }
    /// <summary>Number of LSH bands the signature is cut into (bands · rows ≤ permutations).</summary>
    public int Bands { get; }
    /// <summary>Signature values per band.</summary>
    public int Rows { get; }

    /// <summary>
    /// Hashes of the record's word shingles: lower-cased words (runs of letters and digits), every run of
    /// <see cref="ShingleWords"/> consecutive words (the whole text when it is shorter).
    /// </summary>
    public HashSet<ulong> Shingles(string text)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        foreach (char c in text)
        {
            if (char.IsLetterOrDigit(c)) word.Append(char.ToLowerInvariant(c));
            else if (word.Length > 0) { words.Add(word.ToString()); word.Clear(); }
        }
        if (word.Length > 0) words.Add(word.ToString());
        var set = new HashSet<ulong>();
        int n = Math.Min(ShingleWords, words.Count);
        for (int i = 0; i + n <= words.Count && n > 0; i++)
            set.Add(XxHash64.HashToUInt64(Encoding.UTF8.GetBytes(string.Join(' ', words.GetRange(i, n)))));
        return set;
    }

    /// <summary>The signature: for each permutation h(x) = (a·x + b) mod (2^61 − 1), the minimum over the shingles.</summary>
    public ulong[] Signature(HashSet<ulong> shingles)
    {
        var sig = new ulong[Permutations];
        Array.Fill(sig, ulong.MaxValue);
        foreach (var s in shingles)
        {
            ulong x = s % Prime;
            for (int i = 0; i < Permutations; i++)
            {
                ulong h = (ulong)((UInt128)a[i] * x + b[i]) % Prime;
                if (h < sig[i]) sig[i] = h;
            }
        }
        return sig;
    }

    /// <summary>Keys of the signature's bands (band index mixed in, so equal rows in different bands do not collide).</summary>
    public ulong[] BandKeys(ulong[] signature)
    {
        var keys = new ulong[Bands];
        var bytes = new byte[(Rows + 1) * 8];
        for (int band = 0; band < Bands; band++)
        {
            BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)band);
            for (int r = 0; r < Rows; r++) BitConverter.TryWriteBytes(bytes.AsSpan((r + 1) * 8, 8), signature[band * Rows + r]);
            keys[band] = XxHash64.HashToUInt64(bytes);
        }
        return keys;
    }

    /// <summary>|A ∩ B| / |A ∪ B|; two empty sets count as identical.</summary>
    public static double Jaccard(HashSet<ulong> x, HashSet<ulong> y)
    {
        if (x.Count == 0 && y.Count == 0) return 1;
        int common = x.Count < y.Count ? x.Count(y.Contains) : y.Count(x.Contains);
        return common / (double)(x.Count + y.Count - common);
    }

    /// <summary>Probability that a pair of Jaccard similarity s shares at least one band: 1 − (1 − s^r)^b.</summary>
    public static double CandidateProbability(double s, int bands, int rows) => 1 - Math.Pow(1 - Math.Pow(s, rows), bands);

    /// <summary>
    /// Bands b and rows r = ⌊permutations / b⌋: the most rows (the fewest candidate pairs to verify) for which a pair
    /// exactly at the threshold still becomes a candidate with probability ≥ 0.98. Pairs above the threshold are caught
    /// more often still; candidates are then verified exactly, so extra candidates cost time, not accuracy.
    /// </summary>
    public static (int Bands, int Rows) BandsFor(double threshold, int permutations)
    {
        (int, int) choice = (permutations, 1);
        for (int rows = 1; rows <= permutations; rows++)
        {
            int bands = permutations / rows;
            if (CandidateProbability(threshold, bands, rows) >= 0.98) choice = (bands, rows);
        }
        return choice;
    }
}
