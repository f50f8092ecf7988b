namespace PeftSharp.Inference;

/// <summary>
/// Picks the next token from logits: greedy at temperature 0, otherwise softmax(logits / T) restricted to the
/// smallest set of most likely tokens whose probability reaches top_p (as transformers' TopPLogitsWarper),
/// drawn with a seeded generator so runs repeat.
/// </summary>
public sealed class Sampler(double temperature, double topP, int seed)
{
    readonly Random random = new(seed);

    /// <summary>
    /// The index of the next token drawn from <paramref name="logits"/> (one row, vocabulary size): the argmax at temperature 0, otherwise a top-p sample.
    /// </summary>
    public int Next(float[] logits)
    {
        if (temperature <= 0) return ArgMax(logits);
        int n = logits.Length;
        double max = logits.Max();
        var probs = new double[n];
        double z = 0;
        for (int i = 0; i < n; i++) z += probs[i] = Math.Exp((logits[i] - max) / temperature);
        for (int i = 0; i < n; i++) probs[i] /= z;
        var order = Enumerable.Range(0, n).ToArray();
        Array.Sort(order, (a, b) => probs[b].CompareTo(probs[a]));
        int keep = n;
        if (topP < 1.0)
        {
            double cumulative = 0;
            for (int i = 0; i < n; i++)
            {
                cumulative += probs[order[i]];
                if (cumulative >= topP) { keep = i + 1; break; }
            }
        }
        double mass = 0;
        for (int i = 0; i < keep; i++) mass += probs[order[i]];
        double r = random.NextDouble() * mass;
        for (int i = 0; i < keep; i++)
        {
            r -= probs[order[i]];
            if (r <= 0) return order[i];
        }
        return order[keep - 1];
    }

    /// <summary>The index of the largest value (the first one on a tie).</summary>
    public static int ArgMax(float[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
