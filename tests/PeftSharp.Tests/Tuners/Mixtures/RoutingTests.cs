using PeftSharp.Tuners.Mixtures;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.Mixtures;

/// <summary>Top-k and soft routing and the load-balancing loss against plain loops.</summary>
public class RoutingTests
{
    static double[][] RandomLogits(int n, int e, int seed)
    {
        var random = new Random(seed);
        var rows = new double[n][];
        for (int t = 0; t < n; t++) rows[t] = Enumerable.Range(0, e).Select(_ => Math.Round(random.NextDouble() * 4 - 2, 1)).ToArray();
        return rows;
    }

    static Tensor ToTensor(double[][] rows) => tensor(rows.SelectMany(r => r.Select(v => (float)v)).ToArray()).reshape(rows.Length, rows[0].Length);

    [Fact]
    public void TopKMatchesThePlainLoopWithTiesToTheLowerIndex()
    {
        var rows = RandomLogits(40, 6, 1); // one decimal in [-2, 2]: many ties
        rows[0] = [0, 0, 0, 0, 0, 0];      // all equal: experts 0 and 1
        rows[1] = [1, 3, 3, 0, 3, 2];      // three-way tie at the top: 1 then 2
        using var scope = NewDisposeScope();
        var d = TopKRouting.Route(ToTensor(rows), 2);
        var experts = d.Experts.data<long>().ToArray();
        var weights = d.Weights.data<float>().ToArray();
        var probs = d.Probabilities.data<float>().ToArray();
        for (int t = 0; t < rows.Length; t++)
        {
            var (e, w, p) = MixtureReference.TopK(rows[t], 2);
            Assert.Equal(e[0], experts[t * 2]);
            Assert.Equal(e[1], experts[t * 2 + 1]);
            Assert.True(Math.Abs(w[0] - weights[t * 2]) < 1e-5);
            Assert.True(Math.Abs(w[1] - weights[t * 2 + 1]) < 1e-5);
            for (int j = 0; j < 6; j++) Assert.True(Math.Abs(p[j] - probs[t * 6 + j]) < 1e-5);
        }
        Assert.Equal([0L, 1L], experts[..2]);
        Assert.Equal([1L, 2L], experts[2..4]);
        Assert.Equal(0.5f, weights[0], 6);
    }

    [Fact]
    public void TopKAboveTheExpertCountIsAnError()
    {
        using var logits = zeros(3, 4);
        var ex = Assert.Throws<PeftSharpException>(() => TopKRouting.Route(logits, 5));
        Assert.Contains("top_k is 5", ex.Message);
    }

    [Fact]
    public void SoftRoutingIsASoftmaxOverAllExperts()
    {
        var rows = RandomLogits(5, 4, 2);
        using var scope = NewDisposeScope();
        var w = SoftRouting.Weights(ToTensor(rows)).data<float>().ToArray();
        for (int t = 0; t < rows.Length; t++)
        {
            var p = PeftSharp.Tests.Reference.NaiveOps.Softmax(rows[t]);
            for (int j = 0; j < 4; j++) Assert.True(Math.Abs(p[j] - w[t * 4 + j]) < 1e-5);
        }
    }

    [Fact]
    public void LoadBalancingLossMatchesTheFormulaOverLayers()
    {
        var layer0 = RandomLogits(9, 5, 3);
        var layer1 = RandomLogits(7, 5, 4);
        using var scope = NewDisposeScope();
        var d0 = TopKRouting.Route(ToTensor(layer0), 2);
        var d1 = TopKRouting.Route(ToTensor(layer1), 2);
        double loss = LoadBalancingLoss.Compute([(d0.Probabilities, d0.Experts), (d1.Probabilities, d1.Experts)]).item<float>();
        var all = layer0.Concat(layer1).Select(r => MixtureReference.TopK(r, 2)).ToList();
        double expected = MixtureReference.BalanceLoss(all.Select(a => a.Probs).ToList(), all.Select(a => a.Experts).ToList());
        Assert.True(Math.Abs(expected - loss) < 1e-5, $"{expected} vs {loss}");

        // All logits equal: every token picks experts 0 and 1 (ties), f = (1, 1, 0, 0), P = 1/4 each → L = 4·(1/4 + 1/4).
        var tied = TopKRouting.Route(zeros(4, 4), 2);
        Assert.Equal(4 * (0.25 + 0.25), LoadBalancingLoss.Compute([(tied.Probabilities, tied.Experts)]).item<float>(), 5);
    }

    [Fact]
    public void CoefficientOfVariationIsTheRelativePopulationStandardDeviation()
    {
        Assert.Equal(0, RouterStatistics.CoefficientOfVariation([0.25, 0.25, 0.25, 0.25]), 12);
        // shares 0.5, 0.5, 0, 0: mean 0.25, std 0.25 → 1.
        Assert.Equal(1, RouterStatistics.CoefficientOfVariation([0.5, 0.5, 0, 0]), 12);
    }
}
