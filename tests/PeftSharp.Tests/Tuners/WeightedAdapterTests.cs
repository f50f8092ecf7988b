using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;

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
}
