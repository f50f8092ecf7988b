using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.DyLora;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.DyLora;

public class DyLoraTests
{
    static (CausalLM Model, TinyCheckpoint Ckpt, string Dir) TinyLlama(int seed)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = seed });
        return (ModelLoader.Load(dir), ckpt, dir);
    }

    static LoraConfig Rank4() => new() { R = 4, LoraAlpha = 6, TargetModules = TargetModules.FromNames("q_proj", "v_proj"), InitLoraWeights = InitLoraWeights.False };

    /// <summary>W + (α/b)·B[:, :b]·A[:b, :] by loops.</summary>
    static Dictionary<string, float[]> AtRank(LoraModel lora, Dictionary<string, float[]> weights, int b)
    {
        var expected = Copy(weights);
        foreach (var (path, layer) in lora.LinearLayers)
        {
            int inDim = (int)layer.Host.InFeatures, outDim = (int)layer.Host.OutFeatures, r = layer.Adapters["default"].Rank;
            var a = Values(layer.A("default").weight)[..(b * inDim)];
            var full = Values(layer.B("default").weight);
            var bt = new float[outDim * b];
            for (int o = 0; o < outDim; o++) for (int k = 0; k < b; k++) bt[o * b + k] = full[o * r + k];
            AddTo(expected, path + ".weight", Delta(a, bt, b, inDim, outDim, 6.0 / b), conv1d: false);
        }
        return expected;
    }

    [Fact]
    public void TruncatedRankUsesFirstComponentsAndScalingAlphaOverB()
    {
        var (model, ckpt, _) = TinyLlama(91);
        using var _m = model;
        var lora = LoraModel.Create(model, Rank4(), seed: 1);
        var ids = RandomIds(10, Llama.VocabSize, 2);
        foreach (int b in new[] { 1, 2, 4 })
        {
            lora.SetRank(b);
            Assert.True(MaxAbsDiff(new NaiveLlama(Llama, AtRank(lora, ckpt.Weights, b)).Logits(ids), Logits(model, ids)) < 1e-4, $"rank {b}");
        }
        Assert.Throws<PeftSharpException>(() => lora.SetRank(5));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void FrozenModeSendsGradientOnlyToComponentB(bool frozen)
    {
        var (model, _, _) = TinyLlama(92);
        using var _m = model;
        var lora = LoraModel.Create(model, Rank4(), seed: 3);
        lora.SetRank(3, frozen: frozen);
        var ids = tensor(RandomIds(8, Llama.VocabSize, 4).Select(i => (long)i).ToArray()).unsqueeze(0);
        model.Forward(ids).square().mean().backward();
        var layer = lora.LinearLayers["model.layers.1.self_attn.q_proj"];
        var ga = layer.A("default").weight.grad!;
        var gb = layer.B("default").weight.grad!;
        for (int row = 0; row < 4; row++)
        {
            bool expectGrad = frozen ? row == 2 : row < 3;
            Assert.Equal(expectGrad, ga[row].abs().sum().item<float>() > 0);
            Assert.Equal(expectGrad, gb[.., row].abs().sum().item<float>() > 0);
        }
    }

    [Fact]
    public void SamplersFollowTheirDefinitions()
    {
        // Uniform on 1..8: chi-square with 7 degrees of freedom stays below 24.3 (p = 0.001) for a correct sampler.
        var uniform = new RankSampler(1, 8, "uniform", seed: 5);
        var counts = new int[9];
        const int n = 40000;
        for (int i = 0; i < n; i++) counts[uniform.Next()]++;
        double chi = Enumerable.Range(1, 8).Sum(b => Math.Pow(counts[b] - n / 8.0, 2) / (n / 8.0));
        Assert.True(chi < 24.3, $"chi² = {chi}");
        Assert.Equal(0, counts[0]);

        // Truncated geometric on 2..6 with p = 0.4: P(2 + k) = 0.6^k·0.4 / Σ.
        var geometric = new RankSampler(2, 6, "geometric", p: 0.4, seed: 6);
        double z = Enumerable.Range(0, 5).Sum(k => Math.Pow(0.6, k) * 0.4);
        var probs = geometric.Probabilities;
        for (int k = 0; k < 5; k++) Assert.Equal(Math.Pow(0.6, k) * 0.4 / z, probs[k], 12);
        var g = new int[7];
        for (int i = 0; i < n; i++) g[geometric.Next()]++;
        double chiG = Enumerable.Range(0, 5).Sum(k => Math.Pow(g[2 + k] - n * probs[k], 2) / (n * probs[k]));
        Assert.True(chiG < 18.5, $"chi² = {chiG}"); // 4 degrees of freedom, p = 0.001
        // Seeded: the same stream again; Skip resumes mid-stream.
        var a = new RankSampler(1, 8, seed: 7); var b2 = new RankSampler(1, 8, seed: 7);
        var first = Enumerable.Range(0, 10).Select(_ => a.Next()).ToArray();
        Assert.Equal(first, Enumerable.Range(0, 10).Select(_ => b2.Next()).ToArray());
        b2.Skip(4);
        Assert.Equal(first[4..], Enumerable.Range(0, 6).Select(_ => b2.Next()).ToArray());
    }

    [Fact]
    public void ExportRankEqualsEvaluatingAtThatRank()
    {
        var (model, _, dir) = TinyLlama(93);
        using var _m = model;
        var lora = LoraModel.Create(model, Rank4(), seed: 8);
        var adapterDir = TinyCheckpoints.NewTempDirectory();
        AdapterFiles.Save(lora, adapterDir);
        var ids = RandomIds(9, Llama.VocabSize, 9);
        lora.SetRank(2);
        var want = Logits(model, ids);

        var exported = Path.Combine(TinyCheckpoints.NewTempDirectory(), "r2");
        DyLoraRanks.ExportRank(adapterDir, 2, exported);
        var config = LoraConfig.Load(exported);
        Assert.Equal(2, config.R);
        Assert.Equal(6, config.LoraAlpha);
        Assert.Equal([2, 16], NaiveSafetensors.Read(Path.Combine(exported, "adapter_model.safetensors"))["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].Shape);
        using var fresh = ModelLoader.Load(dir);
        AdapterFiles.Load(fresh, exported);
        Assert.True(MaxAbsDiff(want, Logits(fresh, ids)) < 1e-5);
    }

    [Fact]
    public void ChangingRankAfterMergeNeverCorruptsTheBase()
    {
        var (model, ckpt, _) = TinyLlama(94);
        using var _m = model;
        var lora = LoraModel.Create(model, Rank4(), seed: 10);
        var ids = RandomIds(9, Llama.VocabSize, 11);
        lora.SetRank(2);
        lora.Merge();
        lora.SetRank(3); // unmerges the rank-2 delta first
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, AtRank(lora, ckpt.Weights, 3)).Logits(ids), Logits(model, ids)) < 1e-4);
        using (lora.DisableAdapters())
            Assert.True(MaxAbsDiff(new NaiveLlama(Llama, ckpt.Weights).Logits(ids), Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void SvdTruncationAtFullRankReproducesTheAdapterAndIsOptimalBelow()
    {
        var (model, _, _) = TinyLlama(95);
        using var _m = model;
        var lora = LoraModel.Create(model, Rank4(), seed: 12);
        lora.AddSvdTruncated("default", 4, "svd4");
        lora.AddSvdTruncated("default", 1, "svd1");
        foreach (var layer in lora.LinearLayers.Values)
        {
            var d = layer.DeltaWeight("default");
            Assert.True(layer.DeltaWeight("svd4").allclose(d, atol: 1e-5));
            // Eckart–Young: the rank-1 error is exactly the norm of the remaining singular values.
            var sv = linalg.svdvals(d);
            double tail = Math.Sqrt(sv.narrow(0, 1, sv.shape[0] - 1).square().sum().item<float>());
            Assert.Equal(tail, linalg.matrix_norm(d.sub(layer.DeltaWeight("svd1"))).item<float>(), 4);
        }
    }
}
