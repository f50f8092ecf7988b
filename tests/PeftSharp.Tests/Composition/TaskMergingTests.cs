using PeftSharp.Composition;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Composition;

/// <summary>TaskMerging against <see cref="NaiveTaskMerging"/> loops and hand-computed cases.</summary>
public class TaskMergingTests
{
    static double[] RandomTask(Random rng, int n) => Enumerable.Range(0, n).Select(_ => rng.NextDouble() * 2 - 1).ToArray();

    static double[] Run(string method, IReadOnlyList<double[]> tasks, double[] weights, double? density = null, MajoritySign sign = MajoritySign.Total, long seed = 0)
    {
        using var scope = NewDisposeScope();
        var ts = tasks.Select(t => tensor(t, ScalarType.Float64).view(3, t.Length / 3)).ToList();
        using var gen = new Generator((ulong)seed);
        var merged = TaskMerging.Merge(method, ts, weights, density, sign, gen);
        Assert.Equal([3L, tasks[0].Length / 3], merged.shape);
        return merged.reshape(-1).data<double>().ToArray();
    }

    static void AssertClose(double[] expected, double[] actual, double tol = 1e-12)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= tol, $"[{i}] {expected[i]} vs {actual[i]}");
    }

    [Fact]
    public void TiesByHand()
    {
        // Two tasks of 3 entries each (one row of a 3x1 tensor each), density 1 (no trimming).
        double[] t1 = [1.0, -2.0, 0.5], t2 = [-3.0, -1.0, 0.25];
        // total: votes -2, -3, 0.75 → signs -, -, +; entry 0 keeps only t2 (-3·w2), entry 1 averages both, entry 2 both.
        var merged = Run("ties", [t1, t2], [0.5, 2.0], density: 1.0);
        AssertClose([-6.0, (-1.0 - 2.0) / 2, (0.25 + 0.5) / 2], merged);
        // frequency: votes 0, -2, 2 → +, -, +; entry 0 keeps only t1 (0.5·1).
        var byCount = Run("ties", [t1, t2], [0.5, 2.0], density: 1.0, sign: MajoritySign.Frequency);
        AssertClose([0.5, -1.5, 0.375], byCount);
    }

    [Theory]
    [InlineData("ties", 0.5, false)]
    [InlineData("ties", 0.3, true)]
    [InlineData("magnitude_prune", 0.4, false)]
    [InlineData("linear", 1.0, false)]
    public void MatchesLoops(string method, double density, bool frequency)
    {
        var rng = new Random(7);
        var tasks = Enumerable.Range(0, 3).Select(_ => RandomTask(rng, 60)).ToList();
        double[] weights = [0.7, -0.4, 1.3];
        var expected = method switch
        {
            "ties" => NaiveTaskMerging.Ties(tasks, weights, density, frequency),
            "magnitude_prune" => NaiveTaskMerging.MagnitudePrune(tasks, weights, density),
            _ => NaiveTaskMerging.Linear(tasks, weights),
        };
        var actual = Run(method, tasks, weights, method == "linear" ? null : density, frequency ? MajoritySign.Frequency : MajoritySign.Total);
        AssertClose(expected, actual);
    }

    [Fact]
    public void MagnitudePruneKeepsTheFloorOfDensityTimesN()
    {
        double[] t = [0.1, -0.9, 0.3, 0.05, -0.2, 0.6];
        // ⌊0.5·6⌋ = 3 kept: -0.9, 0.6, 0.3.
        AssertClose([0, -0.9, 0.3, 0, 0, 0.6], Run("magnitude_prune", [t], [1.0], density: 0.5));
    }

    [Fact]
    public void DareKeepsEntriesRescaledByOneOverDensityWithASeededMask()
    {
        var rng = new Random(3);
        var task = Enumerable.Range(0, 30000).Select(_ => 0.5 + rng.NextDouble()).ToArray(); // no zeros
        double density = 0.3, w = 2.0;
        var merged = Run("dare_linear", [task], [w], density, seed: 11);
        int kept = 0;
        for (int i = 0; i < task.Length; i++)
        {
            double ratio = merged[i] / (w * task[i] / density);
            Assert.True(Math.Abs(ratio) < 1e-12 || Math.Abs(ratio - 1) < 1e-12, $"entry {i}: {merged[i]}");
            if (ratio > 0.5) kept++;
        }
        // Binomial(30000, 0.3): mean 9000, sd ≈ 79; 5 sd either way.
        Assert.InRange(kept, 9000 - 400, 9000 + 400);
        AssertClose(merged, Run("dare_linear", [task], [w], density, seed: 11));
        Assert.NotEqual(merged, Run("dare_linear", [task], [w], density, seed: 12));
    }

    [Fact]
    public void DareTiesAtDensityOneIsTies()
    {
        var rng = new Random(5);
        var tasks = Enumerable.Range(0, 2).Select(_ => RandomTask(rng, 30)).ToList();
        AssertClose(NaiveTaskMerging.Ties(tasks, [1.0, 0.5], 1.0), Run("dare_ties", tasks, [1.0, 0.5], 1.0));
    }

    [Fact]
    public void BadInputIsRefused()
    {
        double[] t = [1, 2, 3];
        Assert.Throws<PeftSharpException>(() => Run("ties", [t], [1.0]));           // no density
        Assert.Throws<PeftSharpException>(() => Run("ties", [t], [1.0], -0.5));     // negative density
        Assert.Throws<PeftSharpException>(() => Run("median", [t], [1.0], 0.5));    // unknown method
        using var x = tensor(t);
        Assert.Throws<PeftSharpException>(() => TaskMerging.Merge("linear", [x], [1.0, 2.0])); // weight count
    }
}
