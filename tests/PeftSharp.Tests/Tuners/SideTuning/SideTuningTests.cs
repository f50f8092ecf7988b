using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SideTuning;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.SideTuning;

/// <summary>
/// Ladder side tuning and side tuning against plain loops: the gated ladder and the blend computed row by row from the
/// naive GPT-2's hidden states, the pruning init's choice of units, the backbone without autograd, files written by
/// hand, one-line errors.
/// </summary>
public class SideTuningTests
{
    // hidden 24, 3 heads of 8, MLP 96; with r = 2: hidden 12, heads of 4, MLP 48.
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 53, NEmbd = 24, NLayer = 2, NHead = 3, NPositions = 40 };
    static readonly NaiveLlamaConfig Llama = new() { VocabSize = 47, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2 };

    static (CausalLM Model, TinyCheckpoint Ckpt, string Dir) LoadGpt2()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 17 });
        return (ModelLoader.Load(dir), ckpt, dir);
    }

    static CausalLM LoadLlama()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 18 });
        return ModelLoader.Load(dir);
    }

    static float[] Values(Tensor t) => t.detach().to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();

    /// <summary>Makes the side network non-trivial: random up-projection and gates (the init has a zero up-projection).</summary>
    static void Perturb(SideNetwork net)
    {
        using var _ = no_grad();
        using var gen = new Generator(5);
        net.Upsample.weight.copy_(randn(net.Upsample.weight.shape, generator: gen).mul(0.2));
        net.Gates?.copy_(tensor(new float[] { 0.03f, -0.05f }));
        net.Blend?.copy_(tensor(new float[] { 0.4f }));
    }

    // ---------------------------------------------------------------- plain-loop side network (GPT-2 family)

    sealed class NaiveSide(IReadOnlyDictionary<string, float[]> w, int hidden, int side, int heads, int inner, double temperature)
    {
        double[] Down(int i, double[] x) => NaiveOps.Linear(x, w[$"downsamples.{i}.weight"], w[$"downsamples.{i}.bias"], hidden, side);

        double[][] Block(int l, double[][] x)
        {
            string p = $"h.{l}.";
            int t = x.Length, hd = side / heads;
            var q = new double[t][]; var k = new double[t][]; var v = new double[t][];
            for (int i = 0; i < t; i++)
            {
                var a = NaiveOps.LayerNorm(x[i], w[p + "ln_1.weight"], w[p + "ln_1.bias"], 1e-5);
                var qkv = NaiveOps.Conv1D(a, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"], side, 3 * side);
                q[i] = NaiveOps.Slice(qkv, 0, side); k[i] = NaiveOps.Slice(qkv, side, side); v[i] = NaiveOps.Slice(qkv, 2 * side, side);
            }
            var merged = Enumerable.Range(0, t).Select(_ => new double[side]).ToArray();
            for (int n = 0; n < heads; n++)
            {
                var o = NaiveHooks.Attention(q.Select(r => NaiveOps.Slice(r, n * hd, hd)).ToArray(), k.Select(r => NaiveOps.Slice(r, n * hd, hd)).ToArray(),
                    v.Select(r => NaiveOps.Slice(r, n * hd, hd)).ToArray(), 1.0 / Math.Sqrt(hd), 0);
                for (int i = 0; i < t; i++) Array.Copy(o[i], 0, merged[i], n * hd, hd);
            }
            var h = new double[t][];
            for (int i = 0; i < t; i++)
            {
                h[i] = NaiveOps.Add(x[i], NaiveOps.Conv1D(merged[i], w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"], side, side));
                var m = NaiveOps.LayerNorm(h[i], w[p + "ln_2.weight"], w[p + "ln_2.bias"], 1e-5);
                var up = NaiveOps.Conv1D(m, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"], side, inner);
                for (int j = 0; j < inner; j++) up[j] = NaiveOps.GeluNew(up[j]);
                h[i] = NaiveOps.Add(h[i], NaiveOps.Conv1D(up, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"], inner, side));
            }
            return h;
        }

        double[] Up(double[] s) => NaiveOps.Linear(NaiveOps.LayerNorm(s, w["ln_f.weight"], w["ln_f.bias"], 1e-5), w["upsample.weight"], null, side, hidden);

        /// <summary>LST: side = down_0(h_0); after block l: side = μ_l·down_{l+1}(h_{l+1}) + (1 − μ_l)·block_l(side).</summary>
        public double[][] Ladder(IReadOnlyList<double[][]> taps)
        {
            var s = taps[0].Select(r => Down(0, r)).ToArray();
            for (int l = 0; l + 1 < taps.Count; l++)
            {
                s = Block(l, s);
                double mu = 1.0 / (1.0 + Math.Exp(-w["gates"][l] / temperature));
                for (int i = 0; i < s.Length; i++)
                {
                    var d = Down(l + 1, taps[l + 1][i]);
                    for (int j = 0; j < side; j++) s[i][j] = mu * d[j] + (1 - mu) * s[i][j];
                }
            }
            return s.Select(Up).ToArray();
        }

        /// <summary>Side tuning: the blocks over down_0(h_0) only.</summary>
        public double[][] Plain(double[][] embeddings, int layers)
        {
            var s = embeddings.Select(r => Down(0, r)).ToArray();
            for (int l = 0; l < layers; l++) s = Block(l, s);
            return s.Select(Up).ToArray();
        }
    }

    static Dictionary<string, float[]> Weights(SideNetwork net) => net.named_parameters().ToDictionary(p => p.name, p => Values(p.parameter));

    [Theory]
    [InlineData("lst")]
    [InlineData("side")]
    public void SideForwardMatchesPlainLoop(string method)
    {
        var (model, ckpt, _) = LoadGpt2();
        using var _m = model;
        SideNetworkConfig config = method == "lst" ? new LstConfig { ReductionFactor = 2 } : new SideTuningConfig { ReductionFactor = 2 };
        var tuner = SideTuningModel.Create(model, config, seed: 3);
        var net = tuner.Network("default");
        Perturb(net);
        var w = Weights(net);
        var naiveSide = new NaiveSide(w, 24, 12, 3, 48, 0.1);
        var ids = RandomIds(9, Gpt2.VocabSize, seed: 4);

        var taps = new List<double[][]>();
        var hooks = new NaiveHooks
        {
            Observe = (l, rows) => taps.Add(rows),
            Final = final =>
            {
                if (method == "lst")
                {
                    var up = naiveSide.Ladder(taps);
                    return final.Select((r, i) => NaiveOps.Add(r, up[i])).ToArray();
                }
                var side = naiveSide.Plain(taps[0], Gpt2.NLayer);
                double a = 1.0 / (1.0 + Math.Exp(-w["blend"][0]));
                return final.Select((r, i) => r.Select((x, j) => a * x + (1 - a) * side[i][j]).ToArray()).ToArray();
            },
        };
        var want = new NaiveGpt2(Gpt2, ckpt.Weights) { Hooks = hooks }.Logits(ids);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        // Without the adapter: the base model again.
        using (tuner.DisableAdapters())
            Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, ckpt.Weights).Logits(ids), Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void LstStartsAtTheBaseModel()
    {
        var (model, ckpt, _) = LoadGpt2();
        using var _m = model;
        SideTuningModel.Create(model, new LstConfig { ReductionFactor = 2 }, seed: 3);
        var ids = RandomIds(7, Gpt2.VocabSize, seed: 6);
        Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, ckpt.Weights).Logits(ids), Logits(model, ids)) < 1e-4);
    }

    sealed class RequiresGradTap : IHiddenStateTap
    {
        public readonly List<bool> Seen = [];
        public void Observe(int layer, Tensor hidden) => Seen.Add(hidden.requires_grad);
    }

    [Theory]
    [InlineData("gpt2", "lst")]
    [InlineData("llama", "lst")]
    [InlineData("llama", "side")]
    public void BackboneRunsWithoutAutograd(string family, string method)
    {
        using var model = family == "gpt2" ? LoadGpt2().Model : LoadLlama();
        int vocab = family == "gpt2" ? Gpt2.VocabSize : Llama.VocabSize;
        SideNetworkConfig config = method == "lst" ? new LstConfig { ReductionFactor = 2 } : new SideTuningConfig { ReductionFactor = 2 };
        var tuner = SideTuningModel.Create(model, config, seed: 1);
        Perturb(tuner.Network("default"));
        var backbone = model.named_parameters().Where(p => !p.name.StartsWith("side_network.", StringComparison.Ordinal)).Select(p => p.parameter).ToList();
        Assert.All(backbone, p => Assert.False(p.requires_grad));
        // Even a block weight marked trainable gets no gradient: the backbone runs under no_grad (the LM head, after
        // the final hidden states, is outside it).
        var blockWeight = model.named_parameters().First(p => p.name.Contains(".0.mlp.")).parameter;
        blockWeight.requires_grad = true;
        var recorder = new RequiresGradTap();
        using var tap = model.Extensions.AddHiddenStateTap(recorder);
        model.train();
        var ids = tensor(RandomIds(8, vocab, seed: 2).Select(i => (long)i).ToArray()).unsqueeze(0);
        var logits = model.Forward(ids);
        Assert.True(logits.requires_grad);
        Assert.Equal(3, recorder.Seen.Count);
        Assert.All(recorder.Seen, Assert.False); // the backbone's hidden states carry no graph
        logits.pow(2).mean().backward();
        Assert.True(blockWeight.grad is null || blockWeight.grad!.abs().max().item<float>() == 0);
        var up = tuner.Network("default").Upsample.weight.grad;
        Assert.NotNull(up);
        Assert.True(up!.abs().max().item<float>() > 0);
        Assert.True(tuner.Network("default").Downsamples[0].weight.grad!.abs().max().item<float>() > 0);
        Assert.True(is_grad_enabled()); // the forward restored the caller's grad mode
    }

    [Fact]
    public void PruningKeepsTheLargestNormUnits()
    {
        var (model, ckpt, _) = LoadGpt2();
        using var _m = model;
        var net = SideTuningModel.Create(model, new LstConfig { ReductionFactor = 2 }, seed: 3).Network("default");
        var w = Weights(net);
        int e = 24, inner = 96;
        // Residual dimensions: the 12 columns of wte with the largest L1 norms.
        var wte = ckpt.Weights["transformer.wte.weight"];
        var col = new double[e];
        for (int v = 0; v < Gpt2.VocabSize; v++)
            for (int j = 0; j < e; j++) col[j] += Math.Abs(wte[v * e + j]);
        var residual = Enumerable.Range(0, e).OrderByDescending(j => col[j]).Take(12).Order().ToArray();
        var ln = ckpt.Weights["transformer.h.1.ln_1.weight"];
        Assert.Equal(residual.Select(j => ln[j]).ToArray(), w["h.1.ln_1.weight"]);
        // MLP units of block 1: L1 of c_fc's column j ([in, out] storage) plus L1 of c_proj's row j.
        var fc = ckpt.Weights["transformer.h.1.mlp.c_fc.weight"];
        var proj = ckpt.Weights["transformer.h.1.mlp.c_proj.weight"];
        var score = new double[inner];
        for (int j = 0; j < inner; j++)
        {
            for (int i = 0; i < e; i++) score[j] += Math.Abs(fc[i * inner + j]);
            for (int o = 0; o < e; o++) score[j] += Math.Abs(proj[j * e + o]);
        }
        var units = Enumerable.Range(0, inner).OrderByDescending(j => score[j]).Take(48).Order().ToArray();
        var sideFc = w["h.1.mlp.c_fc.weight"]; // [12, 48]
        for (int a = 0; a < 12; a++)
            for (int b = 0; b < 48; b++)
                Assert.Equal(fc[residual[a] * inner + units[b]], sideFc[a * 48 + b]);
        Assert.Equal(units.Select(j => ckpt.Weights["transformer.h.1.mlp.c_fc.bias"][j]).ToArray(), w["h.1.mlp.c_fc.bias"]);
        // The down-projections select the kept dimensions.
        var down = w["downsamples.2.weight"];
        for (int a = 0; a < 12; a++)
            for (int j = 0; j < e; j++) Assert.Equal(j == residual[a] ? 1f : 0f, down[a * e + j]);
    }

    [Fact]
    public void TopKPrefersLargerScoresThenLowerIndices()
    {
        Assert.Equal([1L, 3L], StructuredPruningProbe.TopK([0.5, 2.0, 1.0, 2.0], 2));
        Assert.Equal([0L, 1L, 3L], StructuredPruningProbe.TopK([1.0, 1.0, 0.0, 1.0], 3));
    }

    [Fact]
    public void SaveLoadRoundTripAndHandWrittenFolder()
    {
        var (model, _, _) = LoadGpt2();
        using var _m = model;
        var tuner = SideTuningModel.Create(model, new LstConfig { ReductionFactor = 2, GateTemperature = 0.5 }, seed: 3);
        Perturb(tuner.Network("default"));
        var dir = TinyCheckpoints.NewTempDirectory();
        tuner.SaveAdapter(dir, "default");
        var saved = NaiveSafetensors.Read(Path.Combine(dir, "adapter_model.safetensors"));
        var w = Weights(tuner.Network("default"));
        Assert.Equal(w.Keys.Select(k => "base_model.model.side_network." + k).Order(), saved.Keys.Order());
        foreach (var (k, v) in w) Assert.Equal(v, saved["base_model.model.side_network." + k].Values);
        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")));
        Assert.Equal("LST", cfg.RootElement.GetProperty("peft_type").GetString());
        Assert.Equal(0.5, cfg.RootElement.GetProperty("gate_temperature").GetDouble());

        // A folder written by hand: the same tensors with the gates changed, and a config typed out.
        var hand = TinyCheckpoints.NewTempDirectory();
        File.WriteAllText(Path.Combine(hand, "adapter_config.json"),
            """{"peft_type": "LST", "reduction_factor": 2, "gate_alpha": 0.0, "gate_temperature": 0.5, "side_init": "pruned", "pruning_norm": "l1", "task_type": "CAUSAL_LM"}""");
        var tensors = saved.Values.Select(t => t.Name.EndsWith(".gates") ? t with { Values = [0.25f, -0.75f] } : t).ToList();
        NaiveSafetensors.Write(Path.Combine(hand, "adapter_model.safetensors"), tensors);
        var peft = new PeftModel(model);
        peft.LoadAdapter(hand, "hand");
        var loaded = ((SideTuningModel)peft.TunerOf("hand")).Network("hand");
        Assert.Equal([0.25f, -0.75f], Values(loaded.Gates!));
        Assert.Equal(w["h.0.attn.c_attn.weight"], Values(loaded.Blocks[0].named_parameters().First(p => p.name == "attn.c_attn.weight").parameter));
        Assert.All(loaded.parameters(), p => Assert.False(p.requires_grad));
    }

    [Fact]
    public void BadInputIsAOneLineError()
    {
        var (model, _, _) = LoadGpt2();
        using var _m = model;
        var peft = new PeftModel(model);
        var e = Assert.Throws<PeftSharpException>(() => peft.AddAdapter("x", new LstConfig { ReductionFactor = 5 }));
        Assert.Contains("reduction_factor", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        e = Assert.Throws<PeftSharpException>(() => LstConfig.FromJson("""{"peft_type": "LST", "gate_temperature": 0}"""));
        Assert.Contains("gate_temperature", e.Message);
        e = Assert.Throws<PeftSharpException>(() => SideTuningConfig.FromJson("""{"peft_type": "SIDE_TUNING", "blend_init": 1.5}"""));
        Assert.Contains("blend_init", e.Message);
        e = Assert.Throws<PeftSharpException>(() => LstConfig.FromJson("""{"peft_type": "LST", "side_init": "magic"}"""));
        Assert.Contains("side_init", e.Message);

        // A tensor of the wrong shape names the file and the tensor; the failed adapter is removed.
        var tuner = SideTuningModel.Create(model, new LstConfig { ReductionFactor = 2 }, seed: 3);
        var dir = TinyCheckpoints.NewTempDirectory();
        tuner.SaveAdapter(dir, "default");
        var tensors = NaiveSafetensors.Read(Path.Combine(dir, "adapter_model.safetensors")).Values
            .Select(t => t.Name.EndsWith(".gates") ? t with { Shape = [3], Values = [0f, 0f, 0f] } : t).ToList();
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        e = Assert.Throws<PeftSharpException>(() => peft.LoadAdapter(dir, "bad"));
        Assert.Contains("side_network.gates", e.Message);
        Assert.Contains("adapter_model.safetensors", e.Message);
        Assert.DoesNotContain("bad", peft.Adapters);
        Assert.Throws<PeftSharpException>(() => tuner.Merge());
    }

    [Fact]
    public void GenerationWithACacheMatchesTheFullForward()
    {
        using var model = LoadLlama();
        Perturb(SideTuningModel.Create(model, new LstConfig { ReductionFactor = 2 }, seed: 1).Network("default"));
        var ids = RandomIds(8, Llama.VocabSize, seed: 3);
        var full = Logits(model, ids);
        using var _ = no_grad();
        using var cache = model.NewCache();
        var first = model.Forward(tensor(ids[..6].Select(i => (long)i).ToArray()).unsqueeze(0), cache);
        var next = model.Forward(tensor(ids[6..].Select(i => (long)i).ToArray()).unsqueeze(0), cache);
        var joined = ToArray(cat([first[0], next[0]], 0));
        Assert.True(MaxAbsDiff(full, joined) < 1e-4);
    }
}

/// <summary>The pruning helper's ranking, reached through the internals visible to tests.</summary>
static class StructuredPruningProbe
{
    public static long[] TopK(double[] scores, int k) => StructuredPruning.TopK(scores, k);
}
