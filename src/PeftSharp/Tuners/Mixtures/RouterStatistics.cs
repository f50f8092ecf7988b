using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>How one router used its experts over the tokens it saw.</summary>
public sealed class RouterUsage
{
    internal RouterUsage(string label, int experts)
    {
        Label = label;
        Counts = new double[experts];
        ProbabilitySums = new double[experts];
    }

    /// <summary>The router's name (a layer, or a module path for per-linear routers).</summary>
    public string Label { get; }
    /// <summary>Tokens routed.</summary>
    public long Tokens { get; private set; }
    /// <summary>Per expert: tokens sent to it (each of a token's k choices counts once; dense routers count the top-1).</summary>
    public double[] Counts { get; }
    /// <summary>Per expert: sum of its router probability over the tokens.</summary>
    public double[] ProbabilitySums { get; }
    /// <summary>Sum over tokens of the router distribution's entropy (nats).</summary>
    public double EntropySum { get; private set; }

    /// <summary>Per expert: its share of the choices (sums to 1; zeros before any token).</summary>
    public double[] Shares
    {
        get
        {
            double total = Counts.Sum();
            return Counts.Select(c => total > 0 ? c / total : 0).ToArray();
        }
    }

    /// <summary>Mean router entropy per token, nats (log E is the most, an even spread).</summary>
    public double MeanEntropy => Tokens > 0 ? EntropySum / Tokens : double.NaN;

    /// <summary>Coefficient of variation of the per-expert shares: population standard deviation / mean (0 = perfectly even).</summary>
    public double CoefficientOfVariation => RouterStatistics.CoefficientOfVariation(Shares);

    internal void Add(double[] probs, long[] chosen, long n, int k)
    {
        int e = Counts.Length;
        for (long t = 0; t < n; t++)
        {
            double h = 0;
            for (int j = 0; j < e; j++)
            {
                double p = probs[t * e + j];
                ProbabilitySums[j] += p;
                if (p > 0) h -= p * Math.Log(p);
            }
            EntropySum += h;
            for (int j = 0; j < k; j++) Counts[chosen[t * k + j]] += 1;
        }
        Tokens += n;
    }
}

/// <summary>
/// Expert-usage statistics of every router of a model, gathered while <see cref="RoutingLog.Statistics"/> is set
/// (what <c>peftsharp experts</c> prints and the load-balance benchmark measures). Routers are kept in the order they first ran.
/// </summary>
public sealed class RouterStatistics
{
    readonly List<RouterUsage> routers = [];
    readonly Dictionary<string, RouterUsage> byLabel = new(StringComparer.Ordinal);

    /// <summary>Every router seen, in the order they first ran.</summary>
    public IReadOnlyList<RouterUsage> Routers => routers;

    /// <summary>Adds a batch: router probabilities [.., E] and chosen experts [.., k] (null: the top-1 of the probabilities).</summary>
    public void Add(string label, Tensor probabilities, Tensor? chosen)
    {
        using var scope = NewDisposeScope();
        long e = probabilities.shape[^1];
        var p = probabilities.detach().reshape(-1, e).to_type(ScalarType.Float64).cpu().contiguous();
        var c = (chosen ?? p.argmax(-1, keepdim: true)).detach().reshape(p.shape[0], -1).to_type(ScalarType.Int64).cpu().contiguous();
        if (!byLabel.TryGetValue(label, out var usage))
        {
            usage = new RouterUsage(label, (int)e);
            byLabel[label] = usage;
            routers.Add(usage);
        }
        usage.Add(p.data<double>().ToArray(), c.data<long>().ToArray(), p.shape[0], (int)c.shape[1]);
    }

    /// <summary>Population standard deviation over mean of <paramref name="values"/> (NaN when the mean is 0).</summary>
    public static double CoefficientOfVariation(IReadOnlyList<double> values)
    {
        if (values.Count == 0) return double.NaN;
        double mean = values.Average();
        if (mean == 0) return double.NaN;
        double variance = values.Sum(v => (v - mean) * (v - mean)) / values.Count;
        return Math.Sqrt(variance) / mean;
    }

    /// <summary>The mean of the routers' coefficients of variation.</summary>
    public double MeanCoefficientOfVariation => routers.Count == 0 ? double.NaN : routers.Average(r => r.CoefficientOfVariation);
}
