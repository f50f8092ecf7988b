namespace PeftSharp.Composition;

/// <summary>
/// A derivative-free minimiser: CMA-ES, the covariance matrix adaptation evolution strategy with weighted
/// recombination, rank-one and rank-μ updates and cumulative step-size control, written from Hansen's tutorial
/// ("The CMA Evolution Strategy: A Tutorial", 2016, its default parameters). Written by hand: no .NET package here
/// provides it. Box bounds are handled by clipping each candidate into the box before it is evaluated and used.
/// The start point is evaluated first (it counts towards the budget). Deterministic for a given seed.
/// </summary>
public sealed class Cmaes
{
    /// <summary>The best point evaluated, its value, and every evaluation's value in order.</summary>
    public sealed record Result(double[] Best, double BestValue, int Evaluations, IReadOnlyList<double> Values);

    /// <summary>
    /// Minimises <paramref name="f"/> from <paramref name="start"/> with initial step <paramref name="sigma"/>, using at
    /// most <paramref name="budget"/> evaluations; <paramref name="lower"/>/<paramref name="upper"/> bound each coordinate.
    /// <paramref name="onEvaluation"/> sees each evaluation's index, value and the best value so far.
    /// </summary>
    public static Result Minimize(Func<double[], double> f, double[] start, double sigma, int budget, double lower = double.NegativeInfinity,
                                  double upper = double.PositiveInfinity, long seed = 0, Action<int, double, double>? onEvaluation = null)
    {
        int n = start.Length;
        if (n == 0) throw new ArgumentException("at least one coordinate", nameof(start));
        if (budget < 1) throw new PeftSharpException($"the evaluation budget must be ≥ 1, got {budget}");
        if (!(sigma > 0)) throw new PeftSharpException($"the initial step must be > 0, got {sigma}");
        var rng = new Random(unchecked((int)seed ^ (int)(seed >> 32)));

        int lambda = 4 + (int)Math.Floor(3 * Math.Log(n));
        int mu = lambda / 2;
        var weights = Enumerable.Range(1, mu).Select(i => Math.Log(mu + 0.5) - Math.Log(i)).ToArray();
        double wsum = weights.Sum();
        for (int i = 0; i < mu; i++) weights[i] /= wsum;
        double mueff = 1 / weights.Sum(w => w * w);
        double cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n);
        double cs = (mueff + 2) / (n + mueff + 5);
        double c1 = 2 / ((n + 1.3) * (n + 1.3) + mueff);
        double cmu = Math.Min(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((n + 2) * (n + 2) + mueff));
        double damps = 1 + 2 * Math.Max(0, Math.Sqrt((mueff - 1) / (n + 1)) - 1) + cs;
        double chiN = Math.Sqrt(n) * (1 - 1.0 / (4 * n) + 1.0 / (21.0 * n * n));

        var mean = start.Select(x => Math.Clamp(x, lower, upper)).ToArray();
        var pc = new double[n];
        var ps = new double[n];
        var C = Identity(n);
        var B = Identity(n);
        var D = Enumerable.Repeat(1.0, n).ToArray();
        var values = new List<double>();
        double[] best = (double[])mean.Clone();
        double bestValue = double.PositiveInfinity;
        int generation = 0;

        // The start point is the first evaluation, so the result is never worse than where the search began.
        double startValue = f((double[])mean.Clone());
        if (double.IsNaN(startValue)) startValue = double.PositiveInfinity;
        values.Add(startValue);
        bestValue = startValue;
        onEvaluation?.Invoke(0, startValue, bestValue);

        while (values.Count < budget)
        {
            int count = Math.Min(lambda, budget - values.Count);
            var candidates = new List<(double[] X, double[] Y, double F)>();
            for (int k = 0; k < count; k++)
            {
                var z = Enumerable.Range(0, n).Select(_ => Gaussian(rng)).ToArray();
                var x = new double[n];
                for (int i = 0; i < n; i++)
                {
                    double bdz = 0;
                    for (int j = 0; j < n; j++) bdz += B[i, j] * D[j] * z[j];
                    x[i] = Math.Clamp(mean[i] + sigma * bdz, lower, upper);
                }
                double fx = f(x);
                if (double.IsNaN(fx)) fx = double.PositiveInfinity;
                values.Add(fx);
                if (fx < bestValue) { bestValue = fx; best = (double[])x.Clone(); }
                onEvaluation?.Invoke(values.Count - 1, fx, bestValue);
                candidates.Add((x, x.Select((xi, i) => (xi - mean[i]) / sigma).ToArray(), fx));
            }
            if (count < lambda) break; // the budget ended inside a generation: no update from a partial one
            candidates.Sort((a, b) => a.F.CompareTo(b.F));

            var oldMean = mean;
            mean = new double[n];
            for (int k = 0; k < mu; k++)
                for (int i = 0; i < n; i++) mean[i] += weights[k] * candidates[k].X[i];
            var step = mean.Select((m, i) => (m - oldMean[i]) / sigma).ToArray();

            // ps ← (1 − cs)·ps + √(cs(2 − cs)μeff)·C^(−1/2)·step, with C^(−1/2) = B·D⁻¹·Bᵀ.
            var invSqrt = new double[n];
            for (int j = 0; j < n; j++)
            {
                double bt = 0;
                for (int i = 0; i < n; i++) bt += B[i, j] * step[i];
                invSqrt[j] = bt / D[j];
            }
            double psNorm = 0;
            for (int i = 0; i < n; i++)
            {
                double v = 0;
                for (int j = 0; j < n; j++) v += B[i, j] * invSqrt[j];
                ps[i] = (1 - cs) * ps[i] + Math.Sqrt(cs * (2 - cs) * mueff) * v;
                psNorm += ps[i] * ps[i];
            }
            psNorm = Math.Sqrt(psNorm);
            generation++;
            bool hsig = psNorm / Math.Sqrt(1 - Math.Pow(1 - cs, 2 * generation)) / chiN < 1.4 + 2.0 / (n + 1);
            for (int i = 0; i < n; i++) pc[i] = (1 - cc) * pc[i] + (hsig ? Math.Sqrt(cc * (2 - cc) * mueff) * step[i] : 0);

            double decay = 1 - c1 - cmu + (hsig ? 0 : c1 * cc * (2 - cc));
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                {
                    double rankMu = 0;
                    for (int k = 0; k < mu; k++) rankMu += weights[k] * candidates[k].Y[i] * candidates[k].Y[j];
                    C[i, j] = decay * C[i, j] + c1 * pc[i] * pc[j] + cmu * rankMu;
                }
            sigma *= Math.Exp(cs / damps * (psNorm / chiN - 1));
            (B, var eigen) = SymmetricEigen(C);
            D = eigen.Select(e => Math.Sqrt(Math.Max(e, 1e-20))).ToArray();
        }
        return new Result(best, bestValue, values.Count, values);
    }

    static double[,] Identity(int n)
    {
        var m = new double[n, n];
        for (int i = 0; i < n; i++) m[i, i] = 1;
        return m;
    }

    static double Gaussian(Random rng)
    {
        double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>Eigenvectors (columns) and eigenvalues of a symmetric matrix, by cyclic Jacobi rotations.</summary>
    internal static (double[,] Vectors, double[] Values) SymmetricEigen(double[,] matrix)
    {
        int n = matrix.GetLength(0);
        var a = (double[,])matrix.Clone();
        // Symmetrise against round-off in the update.
        for (int i = 0; i < n; i++) for (int j = i + 1; j < n; j++) a[i, j] = a[j, i] = 0.5 * (a[i, j] + a[j, i]);
        var v = Identity(n);
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (int i = 0; i < n; i++) for (int j = i + 1; j < n; j++) off += a[i, j] * a[i, j];
            if (off < 1e-30) break;
            for (int p = 0; p < n; p++)
                for (int q = p + 1; q < n; q++)
                {
                    if (Math.Abs(a[p, q]) < 1e-300) continue;
                    double theta = (a[q, q] - a[p, p]) / (2 * a[p, q]);
                    double t = Math.Sign(theta) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                    if (theta == 0) t = 1;
                    double c = 1 / Math.Sqrt(t * t + 1), s = t * c;
                    for (int k = 0; k < n; k++)
                    {
                        double akp = a[k, p], akq = a[k, q];
                        a[k, p] = c * akp - s * akq;
                        a[k, q] = s * akp + c * akq;
                    }
                    for (int k = 0; k < n; k++)
                    {
                        double apk = a[p, k], aqk = a[q, k];
                        a[p, k] = c * apk - s * aqk;
                        a[q, k] = s * apk + c * aqk;
                    }
                    for (int k = 0; k < n; k++)
                    {
                        double vkp = v[k, p], vkq = v[k, q];
                        v[k, p] = c * vkp - s * vkq;
                        v[k, q] = s * vkp + c * vkq;
                    }
                }
        }
        return (v, Enumerable.Range(0, n).Select(i => a[i, i]).ToArray());
    }
}
