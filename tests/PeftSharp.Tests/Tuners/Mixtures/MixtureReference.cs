using PeftSharp.Tests.Reference;

namespace PeftSharp.Tests.Tuners.Mixtures;

/// <summary>Plain-loop routing arithmetic: what the routers, mixtures and the load-balancing loss must equal.</summary>
internal static class MixtureReference
{
    /// <summary>Router logits G·x for G [E, in] (row-major).</summary>
    public static double[] Logits(float[] gate, double[] x, int experts)
    {
        int d = x.Length;
        var logits = new double[experts];
        for (int e = 0; e < experts; e++)
            for (int j = 0; j < d; j++) logits[e] += gate[e * d + j] * x[j];
        return logits;
    }

    /// <summary>Top-k by probability, ties to the lower index; weights renormalised to sum to 1.</summary>
    public static (int[] Experts, double[] Weights, double[] Probs) TopK(double[] logits, int k)
    {
        var p = NaiveOps.Softmax(logits);
        var chosen = new List<int>();
        for (int slot = 0; slot < k; slot++)
        {
            int best = -1;
            for (int e = 0; e < p.Length; e++)
                if (!chosen.Contains(e) && (best < 0 || p[e] > p[best])) best = e; // strict >: the lower index keeps a tie
            chosen.Add(best);
        }
        double sum = chosen.Sum(e => p[e]);
        return ([.. chosen], chosen.Select(e => p[e] / sum).ToArray(), p);
    }

    /// <summary>B·A·x·s for one expert: A [r, in] and B [out, r] given at an offset in stacked arrays.</summary>
    public static double[] LoraDelta(float[] a, float[] b, int expert, int r, int inDim, int outDim, double[] x, double scaling)
    {
        var z = new double[r];
        for (int i = 0; i < r; i++)
            for (int j = 0; j < inDim; j++) z[i] += a[(expert * r + i) * inDim + j] * x[j];
        var y = new double[outDim];
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < r; i++) y[o] += b[(expert * outDim + o) * r + i] * z[i] * scaling;
        return y;
    }

    /// <summary>E·Σ_e f_e·P_e over tokens (probabilities per token, chosen experts per token).</summary>
    public static double BalanceLoss(IReadOnlyList<double[]> probs, IReadOnlyList<int[]> chosen)
    {
        int e = probs[0].Length, n = probs.Count;
        double loss = 0;
        for (int j = 0; j < e; j++)
        {
            double f = chosen.Sum(c => c.Count(x => x == j)) / (double)n;
            double p = probs.Average(row => row[j]);
            loss += f * p;
        }
        return loss * e;
    }
}
