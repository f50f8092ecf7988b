using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Bottleneck;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.Bottleneck;

/// <summary>AdapterFusion against a plain loop of AdapterHub's BertFusion, its file layout, training and refusals.</summary>
public class AdapterFusionTests
{
    static void Randomize(IEnumerable<(string Name, TorchSharp.Modules.Parameter Param)> ps, int seed, double std)
    {
        var gen = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (_, p) in ps) p.normal_(0, std, gen);
    }

    static (CausalLM Model, TinyCheckpoint Ckpt) TinyLlama(int seed) => TinyLlama(seed, out _);

    static (CausalLM Model, TinyCheckpoint Ckpt) TinyLlama(int seed, out string dir)
    {
        dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = seed });
        return (ModelLoader.Load(dir), ckpt);
    }

    static double[] MatVec(float[] w, float[]? b, double[] x, int rows)
    {
        int cols = x.Length;
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = b?[r] ?? 0;
            for (int c = 0; c < cols; c++) s += w[r * cols + c] * x[c];
            y[r] = s;
        }
        return y;
    }

    // One AdapterHub adapter's scaled output up(relu(down(x))) (Pfeiffer: relu, scaling 1).
    static double[] AdapterUp(SubLayerBottleneck a, double[] x)
    {
        var p = a.named_parameters().ToDictionary(t => t.name, t => Values(t.parameter));
        var hidden = MatVec(p["adapter_down.0.weight"], p["adapter_down.0.bias"], x, a.BottleneckSize).Select(v => Math.Max(0, v)).ToArray();
        return MatVec(p["adapter_up.weight"], p["adapter_up.bias"], hidden, x.Length);
    }

    [Fact]
    public void PfeifferFusionOnLlamaMatchesThePlainLoop()
    {
        var (model, ckpt) = TinyLlama(41);
        using var _m = model;
        var hub = AdapterHubModel.For(model);
        hub.AddAdapter("a", AdapterHubConfig.Pfeiffer(4), seed: 1);
        hub.AddAdapter("b", AdapterHubConfig.Pfeiffer(4), seed: 2);
        Randomize(hub.ParametersOf("a"), 3, 0.3);
        Randomize(hub.ParametersOf("b"), 4, 0.3);
        var fusion = AdapterFusionModel.For(model);
        fusion.AddFusion("ab", AdapterFusionConfig.Dynamic(), ["a", "b"], seed: 5);
        Randomize(fusion.ParametersOf("ab"), 6, 0.2);
        fusion.SetActive("ab");

        int h = Llama.HiddenSize;
        double[] Sub(int layer, string kind, double[] residual, double[] input, double[] output)
        {
            if (kind != "mlp") return output;
            var loc = hub.Locations[(layer, SubLayerKind.Mlp)];
            var f = loc.adapter_fusion_layer["a,b"];
            var x = output.Select((o, i) => o + residual[i]).ToArray(); // Pfeiffer: original_ln_before adds h
            var ups = new[] { AdapterUp(loc.adapters["a"], x), AdapterUp(loc.adapters["b"], x) };
            var q = MatVec(Values(f.query!.weight), Values(f.query.bias!), x, h);
            var scores = ups.Select(u => MatVec(Values(f.key!.weight), Values(f.key.bias!), u, h).Select((k, i) => k * q[i]).Sum()).ToArray();
            double max = scores.Max();
            var e = scores.Select(s => Math.Exp(s - max)).ToArray();
            var probs = e.Select(v => v / e.Sum()).ToArray();
            var result = (double[])output.Clone(); // residual_before_ln: the residual is o
            for (int i = 0; i < 2; i++)
            {
                var v = MatVec(Values(f.value!.weight), null, ups[i], h);
                for (int j = 0; j < h; j++) result[j] += probs[i] * v[j];
            }
            return result; // the block adds h
        }
        var naive = new NaiveLlama(Llama, ckpt.Weights) { Hooks = new NaiveHooks { SubLayer = Sub } };
        var ids = RandomIds(9, Llama.VocabSize, 7);
        var want = naive.Logits(ids);
        Assert.True(MaxAbsDiff(want, new NaiveLlama(Llama, ckpt.Weights).Logits(ids)) > 1e-3);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void StaticFusionOfOneAdapterEqualsThatAdapter()
    {
        var (model, _) = TinyLlama(42);
        using var _m = model;
        var hub = AdapterHubModel.For(model);
        hub.AddAdapter("only", AdapterHubConfig.Houlsby(4), seed: 1);
        Randomize(hub.ParametersOf("only"), 2, 0.3);
        var ids = RandomIds(8, Llama.VocabSize, 3);
        hub.SetActive("only", trainable: false);
        var single = Logits(model, ids);
        hub.SetActive(null, trainable: false);
        var fusion = AdapterFusionModel.For(model);
        fusion.AddFusion("f", AdapterFusionConfig.Static(), ["only"], seed: 4);
        Randomize(fusion.ParametersOf("f"), 5, 0.5); // with one adapter the softmax is 1 whatever q and k are
        fusion.SetActive("f");
        Assert.True(MaxAbsDiff(single, Logits(model, ids)) < 1e-5);
        Assert.Equal(2 * Llama.NumHiddenLayers, fusion.LayersOf("f").Count()); // Houlsby: after attention and after the MLP
    }

    [Fact]
    public void OnlyFusionParametersReceiveGradientsAndRegularizationIsTheFormula()
    {
        var (model, _) = TinyLlama(43);
        using var _m = model;
        var hub = AdapterHubModel.For(model);
        hub.AddAdapter("a", AdapterHubConfig.Pfeiffer(4), seed: 1);
        hub.AddAdapter("b", AdapterHubConfig.Pfeiffer(4), seed: 2);
        var fusion = AdapterFusionModel.For(model);
        fusion.AddFusion("ab", AdapterFusionConfig.Dynamic(), ["a", "b"], seed: 3);
        fusion.SetActive("ab");
        int h = Llama.HiddenSize;
        // value_initialized: V = I with 1e-6 off the diagonal, so 0.01·Σ‖I − V‖² = 0.01·layers·H(H−1)·1e-12.
        using (var reg = fusion.RegularizationLoss()!)
            Assert.Equal(0.01 * Llama.NumHiddenLayers * h * (h - 1) * 1e-12, reg.item<float>(), 1e-14);
        Randomize(fusion.ParametersOf("ab"), 4, 0.1);
        double want = 0;
        foreach (var (_, layer) in fusion.LayersOf("ab"))
        {
            var v = Values(layer.value!.weight);
            for (int i = 0; i < h; i++) for (int j = 0; j < h; j++) want += Math.Pow((i == j ? 1 : 0) - v[i * h + j], 2);
        }
        using (var reg = fusion.RegularizationLoss()!) Assert.Equal(0.01 * want, reg.item<float>(), 1e-3);

        var ids = tensor(RandomIds(8, Llama.VocabSize, 5).Select(i => (long)i).ToArray()).unsqueeze(0);
        using var logits = model.forward(ids);
        logits.pow(2).mean().backward();
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();
        Assert.NotEmpty(trainable);
        Assert.All(trainable, n => Assert.Contains(".adapter_fusion_layer.a,b.", n));
        Assert.All(model.named_parameters().Where(p => !p.parameter.requires_grad), p => Assert.True(p.parameter.grad is null));
        Assert.All(fusion.ParametersOf("ab"), p => Assert.True(p.Param.grad is not null && p.Param.grad.abs().sum().item<float>() > 0));
    }

    [Fact]
    public void SavedFolderHasAdapterHubsLayoutAndLoadsBack()
    {
        var (model, ckpt) = TinyLlama(44, out string modelDir);
        using var _m = model;
        var peft = new PeftModel(model);
        var dirA = Path.Combine(TinyCheckpoints.NewTempDirectory(), "a");
        var dirB = Path.Combine(TinyCheckpoints.NewTempDirectory(), "b");
        var hub = AdapterHubModel.For(model);
        hub.AddAdapter("sum", AdapterHubConfig.Pfeiffer(4), seed: 1);
        hub.AddAdapter("neg", AdapterHubConfig.Pfeiffer(4), seed: 2);
        Randomize(hub.ParametersOf("sum"), 3, 0.3);
        Randomize(hub.ParametersOf("neg"), 4, 0.3);
        AdapterHubFiles.Save(hub, dirA, "sum");
        AdapterHubFiles.Save(hub, dirB, "neg");
        hub.Unload();

        peft.AddAdapter("fused", new AdapterFusionPeftConfig { AdapterDirs = [dirA, dirB] }, seed: 5);
        peft.SetAdapter("fused");
        var fusion = peft.Get<AdapterFusionModel>()!;
        Randomize(fusion.ParametersOf("fused"), 6, 0.2);
        var ids = RandomIds(8, Llama.VocabSize, 9);
        var want = Logits(model, ids);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "fusion");
        var folder = peft.Save(outDir, "fused");
        Assert.Equal(Path.Combine(outDir, "fused"), folder); // PEFT's layout: a subfolder for names other than "default"
        Assert.True(File.Exists(Path.Combine(folder, "model_adapter_fusion.safetensors")));
        Assert.True(File.Exists(Path.Combine(folder, "sum", "adapter.safetensors")));
        Assert.True(File.Exists(Path.Combine(folder, "neg", "adapter_config.json")));
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "adapter_fusion_config.json"))))
        {
            var root = doc.RootElement;
            Assert.Equal("sum,neg", root.GetProperty("name").GetString());
            Assert.Equal(["sum", "neg"], root.GetProperty("adapter_names").EnumerateArray().Select(e => e.GetString()!).ToArray());
            var c = root.GetProperty("config");
            Assert.True(c.GetProperty("value").GetBoolean());
            Assert.True(c.GetProperty("regularization").GetBoolean());
            Assert.Equal(JsonValueKind.Null, c.GetProperty("dropout_prob").ValueKind);
            Assert.Equal(Llama.HiddenSize, root.GetProperty("hidden_size").GetInt32());
        }
        using (var file = PeftSharp.Tensors.SafetensorsFile.Open(Path.Combine(folder, "model_adapter_fusion.safetensors")))
        {
            var keys = file.Tensors.Select(t => t.Key).ToHashSet();
            Assert.Contains("model.layers.0.output_adapters.adapter_fusion_layer.sum,neg.query.weight", keys);
            Assert.Contains("model.layers.1.output_adapters.adapter_fusion_layer.sum,neg.value.weight", keys);
            Assert.DoesNotContain("model.layers.0.output_adapters.adapter_fusion_layer.sum,neg.value.bias", keys);
            Assert.Equal(Llama.NumHiddenLayers * 5, keys.Count); // query w+b, key w+b, value w
        }

        using var fresh = ModelLoader.Load(modelDir);
        var loaded = PeftModel.Load(fresh, [folder]);
        Assert.IsType<AdapterFusionTuner>(TunerRegistry.ForFolder(folder));
        Assert.True(MaxAbsDiff(want, Logits(fresh, ids)) < 1e-5);
        Assert.Equal(0, loaded.CountParameters().Trainable);
    }

    [Fact]
    public void BadInputIsAOneLineError()
    {
        var (model, _) = TinyLlama(45);
        using var _m = model;
        var hub = AdapterHubModel.For(model);
        hub.AddAdapter("p", AdapterHubConfig.Parallel(4), seed: 1);
        hub.AddAdapter("s", AdapterHubConfig.Pfeiffer(4), seed: 2);
        hub.AddAdapter("h", AdapterHubConfig.Houlsby(4), seed: 3);
        var fusion = AdapterFusionModel.For(model);
        Assert.Contains("parallel adapter", Assert.Throws<PeftSharpException>(() => fusion.AddFusion("x", AdapterFusionConfig.Dynamic(), ["s", "p"])).Message);
        Assert.Contains("same sub-layers", Assert.Throws<PeftSharpException>(() => fusion.AddFusion("x", AdapterFusionConfig.Dynamic(), ["s", "h"])).Message);
        Assert.Contains("no adapter named \"zz\"", Assert.Throws<PeftSharpException>(() => fusion.AddFusion("x", AdapterFusionConfig.Dynamic(), ["s", "zz"])).Message);

        var dir = TinyCheckpoints.NewTempDirectory();
        File.WriteAllText(Path.Combine(dir, "adapter_fusion_config.json"), """{"adapter_names": ["missing1", "missing2"], "config": {"key": true}, "name": "missing1,missing2"}""");
        File.WriteAllBytes(Path.Combine(dir, "model_adapter_fusion.safetensors"), [8, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'}', 32, 32, 32, 32, 32, 32]);
        var e = Assert.Throws<PeftSharpException>(() => AdapterFusionFiles.Load(fusion, dir, "m"));
        Assert.Contains("fused adapter \"missing1\" not found", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        File.WriteAllText(Path.Combine(dir, "adapter_fusion_config.json"), """{"adapter_names": ["a"], "config": {"value": "yes please"}}""");
        Assert.Contains("'config.value'", Assert.Throws<PeftSharpException>(() => AdapterFusionFiles.ReadConfig(dir)).Message);
    }
}
