using PeftSharp.Composition;

namespace PeftSharp.Tests.Composition;

/// <summary>CMA-ES on functions whose minima are known, and its eigen-solver against the matrix it decomposes.</summary>
public class CmaesTests
{
    [Fact]
    public void FindsTheMinimumOfAShiftedEllipsoid()
    {
        double[] optimum = [0.3, -0.7, 1.1, 0.0];
        double F(double[] x) => Enumerable.Range(0, 4).Sum(i => Math.Pow(10, i / 3.0) * (x[i] - optimum[i]) * (x[i] - optimum[i]));
        var r = Cmaes.Minimize(F, new double[4], 0.5, 800, seed: 3);
        Assert.True(r.BestValue < 1e-8, $"best {r.BestValue}");
        for (int i = 0; i < 4; i++) Assert.Equal(optimum[i], r.Best[i], 3);
        Assert.Equal(800, r.Evaluations);
        Assert.Equal(r.BestValue, r.Values.Min());
    }

    [Fact]
    public void FindsRosenbrocksValley()
    {
        double F(double[] x) => 100 * Math.Pow(x[1] - x[0] * x[0], 2) + Math.Pow(1 - x[0], 2);
        var r = Cmaes.Minimize(F, [-1.0, 1.0], 0.5, 3000, seed: 1);
        Assert.True(r.BestValue < 1e-8, $"best {r.BestValue}");
        Assert.Equal(1.0, r.Best[0], 3);
    }

    [Fact]
    public void StaysInsideTheBoxAndEvaluatesTheStartFirst()
    {
        var seen = new List<double[]>();
        double F(double[] x) { seen.Add((double[])x.Clone()); return Math.Pow(x[0] - 3, 2) + Math.Pow(x[1] + 3, 2); }
        var r = Cmaes.Minimize(F, [0.5, -0.25], 1.0, 300, lower: -1, upper: 1, seed: 2);
        Assert.Equal([0.5, -0.25], seen[0]);
        Assert.All(seen, x => Assert.All(x, v => Assert.InRange(v, -1, 1)));
        Assert.Equal(1.0, r.Best[0], 6);
        Assert.Equal(-1.0, r.Best[1], 6);
    }

    [Fact]
    public void SameSeedSameRun()
    {
        double F(double[] x) => x.Sum(v => v * v);
        Assert.Equal(Cmaes.Minimize(F, [1.0, 2.0, 3.0], 0.3, 50, seed: 9).Values, Cmaes.Minimize(F, [1.0, 2.0, 3.0], 0.3, 50, seed: 9).Values);
        Assert.NotEqual(Cmaes.Minimize(F, [1.0, 2.0, 3.0], 0.3, 50, seed: 9).Values, Cmaes.Minimize(F, [1.0, 2.0, 3.0], 0.3, 50, seed: 10).Values);
    }

    [Fact]
    public void EigenDecompositionReconstructsTheMatrix()
    {
        var rng = new Random(4);
        int n = 6;
        var m = new double[n, n];
        for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) m[i, j] = rng.NextDouble() - 0.5;
        var a = new double[n, n]; // MᵀM + I: symmetric positive definite
        for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) { for (int k = 0; k < n; k++) a[i, j] += m[k, i] * m[k, j]; if (i == j) a[i, j] += 1; }
        var (v, d) = Cmaes.SymmetricEigen(a);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double rebuilt = 0, orth = 0;
                for (int k = 0; k < n; k++) { rebuilt += v[i, k] * d[k] * v[j, k]; orth += v[k, i] * v[k, j]; }
                Assert.Equal(a[i, j], rebuilt, 10);
                Assert.Equal(i == j ? 1.0 : 0.0, orth, 10);
            }
    }
}
