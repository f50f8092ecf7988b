using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>
/// LoRA outputs against the reference model run on W + s·B·A computed by loops, for GPT-2 (Conv1D, fan_in_fan_out)
/// and Llama (nn.Linear); unmerged, merged and unloaded must all agree.
/// </summary>
public class LoraForwardTests
{
    static LoraConfig Config(int r, double alpha, params string[] targets) =>
        new() { R = r, LoraAlpha = alpha, TargetModules = TargetModules.FromNames(targets), InitLoraWeights = InitLoraWeights.False };

    [Fact]
    public void Gpt2Conv1DAdapterEqualsMergedReference()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 41 });
        using var model = ModelLoader.Load(dir);
        var lora = LoraModel.Create(model, Config(4, 8, "c_attn"), seed: 1);
        Assert.True(lora.Configs["default"].FanInFanOut); // PEFT flips it on for Conv1D

        var expected = Copy(ckpt.Weights);
        foreach (var (path, layer) in lora.LinearLayers)
            AddTo(expected, path + ".weight", Delta(Values(layer.A("default").weight), Values(layer.B("default").weight), 4, 16, 48, 8.0 / 4), conv1d: true);
        var ids = RandomIds(15, Gpt2.VocabSize, 2);
        var want = new NaiveGpt2(Gpt2, expected).Logits(ids);
        var baseLogits = new NaiveGpt2(Gpt2, ckpt.Weights).Logits(ids);
        Assert.True(MaxAbsDiff(want, baseLogits) > 1e-2); // the adapter really changes the output

        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        lora.Merge();
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        lora.Unmerge();
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        using (lora.DisableAdapters())
            Assert.True(MaxAbsDiff(baseLogits, Logits(model, ids)) < 1e-4);
        var plain = (CausalLM)lora.MergeAndUnload();
        Assert.DoesNotContain(plain.named_parameters(), p => p.name.Contains("lora_"));
        Assert.True(MaxAbsDiff(want, Logits(plain, ids)) < 1e-4);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LlamaAdapterEqualsMergedReference(bool rslora)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 42 });
        using var model = ModelLoader.Load(dir);
        var config = Config(4, 6, "q_proj", "v_proj", "down_proj");
        config.UseRslora = rslora;
        var lora = LoraModel.Create(model, config, seed: 3);
        Assert.Equal(6, lora.LinearLayers.Count);
        double scaling = rslora ? 6 / Math.Sqrt(4) : 6.0 / 4;
        var expected = Copy(ckpt.Weights);
        foreach (var (path, layer) in lora.LinearLayers)
            AddTo(expected, path + ".weight", Delta(Values(layer.A("default").weight), Values(layer.B("default").weight), 4,
                (int)layer.Host.InFeatures, (int)layer.Host.OutFeatures, scaling), conv1d: false);
        var ids = RandomIds(13, Llama.VocabSize, 4);
        var want = new NaiveLlama(Llama, expected).Logits(ids);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        lora.Merge(safe: true);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void DoraRescalesEachOutputRowToItsMagnitude()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 43 });
        using var model = ModelLoader.Load(dir);
        var config = Config(2, 4, "q_proj");
        config.UseDora = true;
        var lora = LoraModel.Create(model, config, seed: 5);
        var rng = new Random(6);
        var expected = Copy(ckpt.Weights);
        foreach (var (path, layer) in lora.LinearLayers)
        {
            var m = layer.Magnitude("default")!;
            using (no_grad()) m.copy_(tensor(Enumerable.Range(0, (int)m.shape[0]).Select(_ => (float)(0.5 + rng.NextDouble())).ToArray()));
            int inDim = (int)layer.Host.InFeatures, outDim = (int)layer.Host.OutFeatures;
            var delta = Delta(Values(layer.A("default").weight), Values(layer.B("default").weight), 2, inDim, outDim, 2.0);
            var w = ckpt.Weights[path + ".weight"];
            var mag = Values(m);
            var dora = new float[w.Length];
            for (int o = 0; o < outDim; o++)
            {
                double norm = 0;
                for (int i = 0; i < inDim; i++) norm += Math.Pow(w[o * inDim + i] + delta[o, i], 2);
                norm = Math.Sqrt(norm);
                for (int i = 0; i < inDim; i++) dora[o * inDim + i] = (float)(mag[o] / norm * (w[o * inDim + i] + delta[o, i]));
            }
            expected[path + ".weight"] = dora;
        }
        var ids = RandomIds(11, Llama.VocabSize, 7);
        var want = new NaiveLlama(Llama, expected).Logits(ids);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        lora.Merge();
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        lora.Unmerge();
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        Assert.Equal(ckpt.Weights["model.layers.0.self_attn.q_proj.weight"], Values(lora.LinearLayers["model.layers.0.self_attn.q_proj"].Host.weight), new FloatTolerance(1e-5f));
    }

    [Fact]
    public void EmbeddingAdapterAddsTransposedDeltaToTheTable()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 44 });
        using var model = ModelLoader.Load(dir);
        var lora = LoraModel.Create(model, Config(3, 3, "embed_tokens"), seed: 8);
        var layer = lora.EmbeddingLayers["model.embed_tokens"];
        // A [r, vocab], B [dim, r]: ΔE[v, d] = s·Σ_k B[d, k]·A[k, v].
        var delta = Delta(Values(layer.A("default")), Values(layer.B("default")), 3, Llama.VocabSize, Llama.HiddenSize, 1.0);
        var expected = Copy(ckpt.Weights);
        var e = expected["model.embed_tokens.weight"];
        for (int v = 0; v < Llama.VocabSize; v++)
            for (int d = 0; d < Llama.HiddenSize; d++) e[v * Llama.HiddenSize + d] += (float)delta[d, v];
        var ids = RandomIds(9, Llama.VocabSize, 9);
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, expected).Logits(ids), Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void DefaultInitialisationIsKaimingUniformAAndZeroB()
    {
        var config = ModelConfig.FromJson("""{"model_type":"llama","vocab_size":10,"hidden_size":256,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":4}""");
        using var model = ModelLoader.Create(config);
        var lora = LoraModel.Create(model, new LoraConfig { R = 16 }, seed: 10);
        var layer = lora.LinearLayers["model.layers.0.self_attn.q_proj"];
        var a = Values(layer.A("default").weight);
        double bound = 1 / Math.Sqrt(256);
        Assert.All(a, x => Assert.InRange(x, -bound, bound));
        // U(−b, b) has variance b²/3.
        double variance = a.Select(x => (double)x * x).Average();
        Assert.Equal(bound * bound / 3, variance, bound * bound / 3 * 0.1);
        Assert.All(Values(layer.B("default").weight), x => Assert.Equal(0f, x));
        // Gaussian: A ~ N(0, 1/r).
        lora.AddAdapter("g", new LoraConfig { R = 16, InitLoraWeights = InitLoraWeights.Gaussian }, seed: 11);
        var g = Values(layer.A("g").weight);
        Assert.Equal(1.0 / 16 / 16, g.Select(x => (double)x * x).Average(), 1.0 / 256 * 0.1);
    }

    sealed class FloatTolerance(float tolerance) : IEqualityComparer<float>
    {
        public bool Equals(float x, float y) => Math.Abs(x - y) <= tolerance;
        public int GetHashCode(float obj) => 0;
    }
}
