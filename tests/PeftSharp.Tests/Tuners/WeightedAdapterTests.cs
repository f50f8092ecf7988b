using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;
using PeftSharp.Tests.Composition;

namespace PeftSharp.Tests.Tuners;

/// <summary>add_weighted_adapter against ΔW computed by loops from the source factors.</summary>
public class WeightedAdapterTests
{
    static LoraModel Two(int r1, double alpha1, int r2, double alpha2, out CausalLM model)
    {
        var config = ModelConfig.FromJson("""{"model_type":"llama","vocab_size":12,"hidden_size":12,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2}""");
        model = ModelLoader.Create(config);
        model.InitializeWeights(1);
        var lora = LoraModel.Create(model, new LoraConfig { R = r1, LoraAlpha = alpha1, InitLoraWeights = InitLoraWeights.False }, "x", seed: 2);
        lora.AddAdapter("y", new LoraConfig { R = r2, LoraAlpha = alpha2, InitLoraWeights = InitLoraWeights.False }, seed: 3);
        return lora;
    }

    static double[,] LoopDelta(LoraLinear layer, string adapter)
    {
        var s = layer.Adapters[adapter];
        return Delta(Values(layer.A(adapter).weight), Values(layer.B(adapter).weight), s.Rank, (int)layer.Host.InFeatures, (int)layer.Host.OutFeatures, s.Scaling);
    }

    static void AssertClose(double[,] expected, double[,] actual, double tol)
    {
        for (int i = 0; i < expected.GetLength(0); i++)
            for (int j = 0; j < expected.GetLength(1); j++)
                Assert.True(Math.Abs(expected[i, j] - actual[i, j]) < tol, $"[{i},{j}] {expected[i, j]} vs {actual[i, j]}");
    }

    [Fact]
    public void CatIsExactlyTheWeightedSumOfDeltas()
    {
        var lora = Two(2, 4, 3, 3, out var model);
        using var _ = model;
        lora.AddWeightedAdapter(["x", "y"], [0.7, -1.5], "mix", "cat");
        Assert.Equal(5, lora.Configs["mix"].R);
        Assert.Equal(5, lora.Configs["mix"].LoraAlpha);
        foreach (var layer in lora.LinearLayers.Values)
        {
            var dx = LoopDelta(layer, "x");
            var dy = LoopDelta(layer, "y");
            var want = new double[dx.GetLength(0), dx.GetLength(1)];
            for (int i = 0; i < want.GetLength(0); i++) for (int j = 0; j < want.GetLength(1); j++) want[i, j] = 0.7 * dx[i, j] - 1.5 * dy[i, j];
            AssertClose(want, LoopDelta(layer, "mix"), 1e-5);
        }
    }

    [Fact]
    public void LinearFoldsWeightAndScalingIntoBothFactors()
    {
        var lora = Two(2, 4, 2, 1, out var model);
        using var _ = model;
        lora.AddWeightedAdapter(["x", "y"], [0.5, 2.0], "lin", "linear");
        var layer = lora.LinearLayers["model.layers.0.self_attn.q_proj"];
        // A = Σ √(wᵢsᵢ)·Aᵢ, B = Σ √(wᵢsᵢ)·Bᵢ (both weights positive here): s_x = 2, s_y = 0.5.
        var ax = Values(layer.A("x").weight); var ay = Values(layer.A("y").weight);
        var a = Values(layer.A("lin").weight);
        for (int i = 0; i < a.Length; i++) Assert.Equal(Math.Sqrt(0.5 * 2) * ax[i] + Math.Sqrt(2.0 * 0.5) * ay[i], a[i], 5);
        Assert.Throws<PeftSharpException>(() => Two(2, 2, 3, 3, out var other).AddWeightedAdapter(["x", "y"], [1, 1], "bad", "linear"));
    }

    [Fact]
    public void SvdRecoversTheWeightedSumAtFullRank()
    {
        // lora_alpha = r gives scaling 1, where PEFT's svd combination is exactly Σ wᵢ·ΔWᵢ.
        var lora = Two(2, 2, 3, 3, out var model);
        using var _ = model;
        lora.AddWeightedAdapter(["x", "y"], [1.0, 0.5], "svd", "svd", svdRank: 5);
        foreach (var layer in lora.LinearLayers.Values)
        {
            var dx = LoopDelta(layer, "x");
            var dy = LoopDelta(layer, "y");
            var want = new double[dx.GetLength(0), dx.GetLength(1)];
            for (int i = 0; i < want.GetLength(0); i++) for (int j = 0; j < want.GetLength(1); j++) want[i, j] = dx[i, j] + 0.5 * dy[i, j];
            AssertClose(want, LoopDelta(layer, "svd"), 1e-4);
        }
    }

    [Fact]
    public void TruncatedSvdIsTheBestRankKApproximationOfTheWeightedSum()
    {
        // Σ rᵢ = 6 > svd_rank 2: the result must be the rank-2 truncation of Σ wᵢ·ΔWᵢ, taken here from a float64 full SVD
        // of the plain-loop sum (the library factors the sum without forming it).
        var lora = Two(3, 3, 3, 6, out var model);
        using var _ = model;
        lora.AddWeightedAdapter(["x", "y"], [0.7, -0.4], "t", "svd", svdRank: 2);
        foreach (var layer in lora.LinearLayers.Values)
        {
            var dx = LoopDelta(layer, "x");
            var dy = LoopDelta(layer, "y");
            int rows = dx.GetLength(0), cols = dx.GetLength(1);
            var sum = new double[rows * cols];
            for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) sum[i * cols + j] = 0.7 * dx[i, j] - 0.4 * dy[i, j];
            var (u, sv, vh) = TorchSharp.torch.linalg.svd(TorchSharp.torch.tensor(sum, [rows, cols]), fullMatrices: false);
            var best = u.narrow(1, 0, 2).mul(sv.narrow(0, 0, 2).unsqueeze(0)).matmul(vh.narrow(0, 0, 2)).data<double>().ToArray();
            var want = new double[rows, cols];
            for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) want[i, j] = best[i * cols + j];
            AssertClose(want, LoopDelta(layer, "t"), 1e-4);
        }
    }

    static double[] Flat(double[,] m) => m.Cast<double>().ToArray();

    [Fact]
    public void TiesMergesTheAAndBFactorsSeparately()
    {
        // PEFT's ties on LoRA factors: A with weights sign(wᵢsᵢ)·√|wᵢsᵢ|, B with √|wᵢsᵢ|; s_x = 4/2, s_y = 1/2.
        var lora = Two(2, 4, 2, 1, out var model);
        using var _ = model;
        lora.AddWeightedAdapter(["x", "y"], [0.5, -2.0], "t", "ties", density: 0.5);
        double[] wa = [Math.Sqrt(1.0), -Math.Sqrt(1.0)], wb = [1.0, 1.0];
        foreach (var layer in lora.LinearLayers.Values)
        {
            var a = NaiveTaskMerging.Ties([D(layer.A("x").weight), D(layer.A("y").weight)], wa, 0.5);
            var b = NaiveTaskMerging.Ties([D(layer.B("x").weight), D(layer.B("y").weight)], wb, 0.5);
            AssertFlatClose(a, D(layer.A("t").weight), 1e-6);
            AssertFlatClose(b, D(layer.B("t").weight), 1e-6);
        }
    }

    [Theory]
    [InlineData("ties_svd", "total")]
    [InlineData("ties_svd", "frequency")]
    [InlineData("magnitude_prune_svd", "total")]
    public void SvdTypesFactorTheMergedDeltaAtFullRank(string type, string sign)
    {
        // The deltas ΔWᵢ = sᵢBᵢAᵢ merged with weights wᵢsᵢ, then factored exactly at full rank.
        var lora = Two(2, 4, 3, 3, out var model);
        using var _ = model;
        var majority = sign == "total" ? PeftSharp.Composition.MajoritySign.Total : PeftSharp.Composition.MajoritySign.Frequency;
        lora.AddWeightedAdapter(["x", "y"], [0.8, 0.6], "m", type, svdRank: 12, density: 0.4, majoritySign: majority);
        foreach (var layer in lora.LinearLayers.Values)
        {
            double sx = 2.0, sy = 1.0;
            var tasks = new[] { Flat(LoopDelta(layer, "x")), Flat(LoopDelta(layer, "y")) };
            double[] w = [0.8 * sx, 0.6 * sy];
            var want = type == "ties_svd" ? NaiveTaskMerging.Ties(tasks, w, 0.4, sign == "frequency") : NaiveTaskMerging.MagnitudePrune(tasks, w, 0.4);
            AssertFlatClose(want, Flat(LoopDelta(layer, "m")), 1e-4);
        }
    }

    [Fact]
    public void DareIsRepeatableWithASeedAndKeepsTheRank()
    {
        var lora = Two(2, 2, 2, 2, out var model);
        using var _ = model;
        lora.AddWeightedAdapter(["x", "y"], [1.0, 1.0], "d1", "dare_linear", density: 0.5, seed: 4);
        lora.AddWeightedAdapter(["x", "y"], [1.0, 1.0], "d2", "dare_linear", density: 0.5, seed: 4);
        Assert.Equal(2, lora.Configs["d1"].R);
        foreach (var layer in lora.LinearLayers.Values)
            Assert.Equal(Values(layer.A("d1").weight), Values(layer.A("d2").weight));
    }

    [Fact]
    public void BadCombinationsAreOneLineErrors()
    {
        var lora = Two(2, 2, 3, 3, out var model);
        using var _ = model;
        Assert.Contains("same r", Assert.Throws<PeftSharpException>(() => lora.AddWeightedAdapter(["x", "y"], [1, 1], "a", "ties", density: 0.5)).Message);
        Assert.Contains("one weight per adapter", Assert.Throws<PeftSharpException>(() => lora.AddWeightedAdapter(["x", "y"], [1], "b", "svd")).Message);
        Assert.Contains("density", Assert.Throws<PeftSharpException>(() => lora.AddWeightedAdapter(["x", "y"], [1, 1], "c", "ties_svd", density: 1.5)).Message);
        Assert.Contains("density", Assert.Throws<PeftSharpException>(() => lora.AddWeightedAdapter(["x", "y"], [1, 1], "d", "dare_ties_svd")).Message);
        Assert.Contains("not supported", Assert.Throws<PeftSharpException>(() => lora.AddWeightedAdapter(["x", "y"], [1, 1], "e", "median")).Message);
    }

    static double[] D(Tensor t) => Values(t).Select(v => (double)v).ToArray();

    static void AssertFlatClose(double[] expected, double[] actual, double tol)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) < tol, $"[{i}] {expected[i]} vs {actual[i]}");
    }
}
