using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.Bottleneck;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tests.Tuners.Bottleneck;

/// <summary>LLM-Adapters' per-Linear bottleneck adapters against plain loops, on GPT-2 (Conv1D) and on nn.Linear layers.</summary>
public class LinearBottleneckTests
{
    static NaiveLinearAdapter Naive(LinearBottleneck layer, string placement, int d, double scaling, string act) =>
        new(placement, Values(layer.adapter_down.weight), Values(layer.adapter_up.weight), d, scaling, act);

    [Fact]
    public void Gpt2SerialDefaultsMatchPlainLoops()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 11 });
        using var model = ModelLoader.Load(dir);
        var config = new BottleneckConfig { BottleneckSize = 4 }; // defaults: tanh, bert init (random up), scaling 1.0
        var bn = BottleneckModel.Create(model, config, seed: 5);
        Assert.Equal(new[] { "c_fc", "mlp.c_proj" }, config.TargetModules!.Names);
        Assert.Equal(4, bn.Layers.Count);
        Assert.Equal(LinearAdapterPlacement.Input, bn.Layers["transformer.h.0.mlp.c_fc"].Placement);
        Assert.Equal(LinearAdapterPlacement.Output, bn.Layers["transformer.h.1.mlp.c_proj"].Placement);
        Assert.False(bn.Layers.ContainsKey("transformer.h.0.attn.c_proj"));

        var naive = new NaiveAdaptedGpt2(Gpt2, ckpt.Weights);
        foreach (var (path, layer) in bn.Layers)
            naive.Linear[path] = Naive(layer, layer.Placement == LinearAdapterPlacement.Input ? "input" : "output", 4, 1.0, "tanh");
        var ids = RandomIds(12, Gpt2.VocabSize, 3);
        var want = naive.Logits(ids);
        var baseLogits = new NaiveGpt2(Gpt2, ckpt.Weights).Logits(ids);
        Assert.True(MaxAbsDiff(want, baseLogits) > 1e-3); // bert init: the adapter changes the output
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        bn.SetEnabled(false);
        Assert.True(MaxAbsDiff(baseLogits, Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void Gpt2ParallelZeroInitLeavesLogitsUnchangedThenMatchesPlainLoops()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 12 });
        using var model = ModelLoader.Load(dir);
        var config = new BottleneckConfig { BottleneckSize = 3, UseParallelAdapter = true, InitWeights = "mam_adapter", Scaling = JsonValue.Create(2.5), NonLinearity = "relu" };
        var bn = BottleneckModel.Create(model, config, seed: 6);
        Assert.Equal(new[] { "c_attn" }, config.TargetModules!.Names);
        var ids = RandomIds(10, Gpt2.VocabSize, 4);
        var baseLogits = new NaiveGpt2(Gpt2, ckpt.Weights).Logits(ids);
        Assert.True(MaxAbsDiff(baseLogits, Logits(model, ids)) < 1e-5); // zero up-projection: unchanged

        var naive = new NaiveAdaptedGpt2(Gpt2, ckpt.Weights);
        using (no_grad())
            foreach (var (path, layer) in bn.Layers)
            {
                layer.adapter_up.weight.normal_(0, 0.3);
                naive.Linear[path] = Naive(layer, "parallel", 3, 2.5, "relu");
            }
        var want = naive.Logits(ids);
        Assert.True(MaxAbsDiff(want, baseLogits) > 1e-3);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
    }

    [Theory]
    [InlineData(LinearAdapterPlacement.Input)]
    [InlineData(LinearAdapterPlacement.Output)]
    [InlineData(LinearAdapterPlacement.Parallel)]
    public void EachPlacementOnAnNnLinearMatchesLoops(LinearAdapterPlacement placement)
    {
        const int inDim = 5, outDim = 7, d = 3;
        var host = new Linear(inDim, outDim, hasBias: true);
        using (no_grad()) { host.weight.normal_(0, 0.5); host.bias!.normal_(0, 0.5); }
        var config = new BottleneckConfig { BottleneckSize = d, Scaling = JsonValue.Create(0.7) };
        var adapter = new LinearBottleneck(host, placement, config, new Generator(9));
        var x = randn(4, inDim);
        var got = Values(host.forward(x));

        float[] w = Values(host.weight), b = Values(host.bias!), down = Values(adapter.adapter_down.weight), up = Values(adapter.adapter_up.weight), xs = Values(x);
        double[] Affine(float[] m, double[] v, int rows, int cols, float[]? bias)
        {
            var y = new double[rows];
            for (int r = 0; r < rows; r++) { y[r] = bias?[r] ?? 0; for (int k = 0; k < cols; k++) y[r] += m[r * cols + k] * v[k]; }
            return y;
        }
        double[] F(double[] v, int outSize) => Affine(up, Affine(down, v, d, v.Length, null).Select(Math.Tanh).ToArray(), outSize, d, null).Select(t => 0.7 * t).ToArray();
        for (int row = 0; row < 4; row++)
        {
            var xr = xs.Skip(row * inDim).Take(inDim).Select(v => (double)v).ToArray();
            double[] want = placement switch
            {
                LinearAdapterPlacement.Input => Affine(w, xr.Zip(F(xr, inDim), (a, c) => a + c).ToArray(), outDim, inDim, b),
                LinearAdapterPlacement.Output => Affine(w, xr, outDim, inDim, b) is var z ? z.Zip(F(z, outDim), (a, c) => a + c).ToArray() : null!,
                _ => Affine(w, xr, outDim, inDim, b).Zip(F(xr, outDim), (a, c) => a + c).ToArray(),
            };
            for (int j = 0; j < outDim; j++) Assert.Equal(want[j], got[row * outDim + j], 1e-4);
        }
        long expected = placement switch
        {
            LinearAdapterPlacement.Input => 2L * inDim * d,
            LinearAdapterPlacement.Output => 2L * outDim * d,
            _ => (long)inDim * d + (long)d * outDim,
        };
        Assert.Equal(expected, adapter.Parameters().Sum(p => p.Param.numel()));
    }

    [Fact]
    public void LlamaParameterCountsFollowTheFormulas()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 2 });
        using var model = ModelLoader.Load(dir);
        int h = Llama.HiddenSize, layers = Llama.NumHiddenLayers, d = 4;
        int kv = Llama.NumKeyValueHeads * (h / Llama.NumAttentionHeads);
        var serial = BottleneckModel.Create(model, new BottleneckConfig { BottleneckSize = d });
        // gate_proj and up_proj: input side (h → d → h); down_proj: output side (h → d → h).
        Assert.Equal(layers * 3L * 2 * h * d, serial.TrainableParameterCount);
        Assert.Equal(layers * 3L * 2 * h * d, model.parameters().Where(p => p.requires_grad).Sum(p => p.numel()));

        using var model2 = ModelLoader.Load(dir);
        var parallel = BottleneckModel.Create(model2, new BottleneckConfig { BottleneckSize = d, UseParallelAdapter = true, Scaling = JsonValue.Create("learned") });
        // q_proj h → h, k_proj and v_proj h → kv: (h·d + d·out) each, plus one learned scalar per layer.
        Assert.Equal(layers * ((h * d + d * h) + 2L * (h * d + d * kv) + 3), parallel.TrainableParameterCount);

        using var model3 = ModelLoader.Load(dir);
        var adapterP = BottleneckModel.Create(model3, new BottleneckConfig { BottleneckSize = d, UseAdapterP = true });
        Assert.Equal(new[] { "down_proj" }, adapterP.Config!.TargetModules!.Names);
        Assert.Equal(layers * 2L * h * d, adapterP.TrainableParameterCount);
    }

    [Fact]
    public void SerialTargetWithoutAPlacementIsAOneLineError()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 2 });
        using var model = ModelLoader.Load(dir);
        var ex = Assert.Throws<PeftSharpException>(() => BottleneckModel.Create(model, new BottleneckConfig { TargetModules = TargetModules.FromNames("o_proj") }));
        Assert.Contains("'o_proj'", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        var ex2 = Assert.Throws<PeftSharpException>(() => BottleneckModel.Create(model, new BottleneckConfig { TargetModules = TargetModules.FromNames("nothing_here") }));
        Assert.Contains("not found", ex2.Message);
    }
}
