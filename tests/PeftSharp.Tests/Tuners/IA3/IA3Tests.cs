using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.IA3;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.IA3;

/// <summary>
/// (IA)³ against the plain-loop references: the vectors scale a target's output (bias included) or, for feed-forward
/// targets, its input, written row by row in <see cref="NaiveHooks"/>; PEFT-layout folders written by hand; merge,
/// several adapters, disable, parameter counts by formula.
/// </summary>
public class IA3Tests
{
    static readonly NaiveGpt2Config Gpt2 = LoraTestKit.Gpt2;   // E = 16, inner = 64, 2 layers
    static readonly NaiveLlamaConfig Llama = LoraTestKit.Llama; // H = 16, I = 24, 4 heads / 2 kv heads (kvDim 8), 2 layers

    static (CausalLM Model, Dictionary<string, float[]> Weights) LoadGpt2()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 51 });
        return (ModelLoader.Load(dir), ckpt.Weights.ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    static (CausalLM Model, Dictionary<string, float[]> Weights) LoadLlama()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 52 });
        return (ModelLoader.Load(dir), ckpt.Weights.ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    /// <summary>Random vectors per (IA)³ layer, read back as plain arrays keyed by naive module path.</summary>
    static Dictionary<string, double[]> Vectors(IA3Model ia3, string adapter, string modelPrefix)
    {
        var result = new Dictionary<string, double[]>();
        foreach (var (path, layer) in ia3.Layers)
            if (layer.Contains(adapter))
                result[path[modelPrefix.Length..]] = LoraTestKit.Values(layer.Vector(adapter)).Select(v => (double)v).ToArray();
        return result;
    }

    static void Randomize(IA3Model ia3, int seed)
    {
        using var gen = new TorchSharp.torch.Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (name, p, _) in ia3.AdapterParameters())
            p.copy_(rand(p.shape, ScalarType.Float32, generator: gen).mul_(1.5).add_(0.25)); // in [0.25, 1.75)
    }

    /// <summary>Naive hooks for (IA)³: feed-forward paths scale the input row, the others the output row.</summary>
    static NaiveHooks Hooks(IReadOnlyList<Dictionary<string, double[]>> adapters, ISet<string> feedforward)
    {
        double[] Scale(string path, double[] row)
        {
            var r = (double[])row.Clone();
            foreach (var a in adapters)
                if (a.TryGetValue(path, out var l))
                    for (int j = 0; j < r.Length; j++) r[j] *= l[j];
            return r;
        }
        return new NaiveHooks
        {
            LinearInput = (path, x) => feedforward.Contains(path) ? Scale(path, x) : x,
            LinearOutput = (path, y) => feedforward.Contains(path) ? y : Scale(path, y),
        };
    }

    [Fact]
    public void Gpt2DefaultsMatchPeftAndTheReference()
    {
        var (model, weights) = LoadGpt2();
        using var _ = model;
        var ia3 = IA3Model.Create(model, new IA3Config(), seed: 1);
        var config = ia3.Configs["default"];
        // PEFT's defaults for gpt2: c_attn and mlp.c_proj targeted, mlp.c_proj feed-forward; Conv1D → fan_in_fan_out.
        Assert.Equal(["c_attn", "mlp.c_proj"], config.TargetModules!.Names);
        Assert.Equal(["mlp.c_proj"], config.FeedforwardModules!.Names);
        Assert.True(config.FanInFanOut);
        Assert.Equal(["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj", "transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_proj"], ia3.Layers.Keys.Order());
        Assert.Equal([48L, 1], ia3.Layers["transformer.h.0.attn.c_attn"].Vector("default").shape);
        Assert.Equal([1L, 64], ia3.Layers["transformer.h.0.mlp.c_proj"].Vector("default").shape);
        // init_ia3_weights: ones, the identity.
        var ids = RandomIds(12, Gpt2.VocabSize, seed: 2);
        Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, weights).Logits(ids), Logits(model, ids)) < 1e-4);

        Randomize(ia3, 3);
        var hooks = Hooks([Vectors(ia3, "default", "transformer.")], new HashSet<string> { "h.0.mlp.c_proj", "h.1.mlp.c_proj" });
        var expected = new NaiveGpt2(Gpt2, weights) { Hooks = hooks }.Logits(ids);
        Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4);
        Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, weights).Logits(ids), Logits(model, ids)) > 1e-3);
    }

    [Fact]
    public void LlamaDefaultsMatchPeftAndTheReference()
    {
        var (model, weights) = LoadLlama();
        using var _ = model;
        var ia3 = IA3Model.Create(model, new IA3Config(), seed: 1);
        Assert.Equal(["k_proj", "v_proj", "down_proj"], ia3.Configs["default"].TargetModules!.Names);
        Assert.False(ia3.Configs["default"].FanInFanOut);
        Assert.Equal(6, ia3.Layers.Count);
        Assert.Equal([8L, 1], ia3.Layers["model.layers.0.self_attn.k_proj"].Vector("default").shape); // GQA: 2 kv heads × 4
        Assert.Equal([1L, 24], ia3.Layers["model.layers.1.mlp.down_proj"].Vector("default").shape);
        Randomize(ia3, 4);
        var hooks = Hooks([Vectors(ia3, "default", "")], new HashSet<string> { "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj" });
        var ids = RandomIds(10, Llama.VocabSize, seed: 5);
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, weights) { Hooks = hooks }.Logits(ids), Logits(model, ids)) < 1e-4);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void MergedEqualsUnmergedAndUnmergeRestoresTheWeights(string family)
    {
        var (model, _) = family == "gpt2" ? LoadGpt2() : LoadLlama();
        using var _ = model;
        // Output scaling on a layer with a bias (GPT-2's c_attn) scales the bias too.
        var ia3 = IA3Model.Create(model, new IA3Config(), seed: 1);
        Randomize(ia3, 6);
        var before = model.named_parameters().Where(p => !p.name.Contains("ia3_l")).ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var ids = RandomIds(9, 40, seed: 7);
        var unmerged = Logits(model, ids);
        ia3.Merge();
        Assert.All(ia3.Layers.Values, l => Assert.Equal(["default"], l.MergedAdapters));
        Assert.True(MaxAbsDiff(unmerged, Logits(model, ids)) < 1e-5);
        ia3.Unmerge();
        foreach (var (name, p) in model.named_parameters().Where(p => !p.name.Contains("ia3_l")))
            Assert.True(p.detach().allclose(before[name], rtol: 1e-6, atol: 1e-7), name);
        var plain = ia3.MergeAndUnload();
        Assert.DoesNotContain(plain.named_parameters(), p => p.name.Contains("ia3_l"));
        Assert.True(MaxAbsDiff(unmerged, Logits(plain, ids)) < 1e-5);
    }

    [Fact]
    public void SeveralAdaptersMultiplyAndDisableGivesTheBase()
    {
        var (model, weights) = LoadLlama();
        using var _ = model;
        var ia3 = IA3Model.Create(model, new IA3Config(), "first");
        ia3.AddAdapter("second", new IA3Config { TargetModules = TargetModules.FromNames("v_proj", "down_proj", "up_proj"), FeedforwardModules = TargetModules.FromNames("down_proj") });
        Randomize(ia3, 8);
        ia3.SetAdapter("first", "second");
        var first = Vectors(ia3, "first", "");
        var second = Vectors(ia3, "second", "");
        var ff = new HashSet<string> { "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj" };
        var ids = RandomIds(8, Llama.VocabSize, seed: 9);
        var both = new NaiveLlama(Llama, weights) { Hooks = Hooks([first, second], ff) }.Logits(ids);
        Assert.True(MaxAbsDiff(both, Logits(model, ids)) < 1e-4);
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();
        Assert.Contains("model.layers.0.self_attn.v_proj.ia3_l.first", trainable);
        Assert.Contains("model.layers.0.self_attn.v_proj.ia3_l.second", trainable);
        Assert.Equal(6 + 6, trainable.Count);
        using (ia3.DisableAdapters())
            Assert.True(MaxAbsDiff(new NaiveLlama(Llama, weights).Logits(ids), Logits(model, ids)) < 1e-4);
        ia3.SetAdapter("second");
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, weights) { Hooks = Hooks([second], ff) }.Logits(ids), Logits(model, ids)) < 1e-4);
        // Merging both then unmerging keeps the forward.
        ia3.SetAdapter("first", "second");
        ia3.Merge();
        Assert.True(MaxAbsDiff(both, Logits(model, ids)) < 1e-4);
        ia3.Unmerge();
        Assert.True(MaxAbsDiff(both, Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void TrainableParameterCountFollowsTheFormula()
    {
        // PEFT counts one vector entry per output feature of each ordinary target and per input feature of each
        // feed-forward target: GPT-2 default = n_layer · (3E + 4E) for c_attn (out 3E) and mlp.c_proj (in 4E);
        // Llama default = n_layer · (2 · kvHeads · headDim + intermediate) for k_proj, v_proj (out) and down_proj (in).
        var (gpt2, _) = LoadGpt2();
        using (gpt2)
        {
            long baseCount = gpt2.parameters().Sum(p => p.numel());
            var ia3 = IA3Model.Create(gpt2, new IA3Config());
            long expected = Gpt2.NLayer * (3L * Gpt2.NEmbd + 4L * Gpt2.NEmbd);
            Assert.Equal((expected, baseCount + expected), ia3.CountParameters());
            Assert.Equal($"trainable params: {expected:N0} || all params: {baseCount + expected:N0} || trainable%: {100.0 * expected / (baseCount + expected):F4}",
                ia3.ParameterReport());
        }
        var (llama, _) = LoadLlama();
        using (llama)
        {
            var peft = new PeftModel(llama);
            long baseCount = llama.parameters().Sum(p => p.numel());
            peft.AddAdapter("default", new IA3Config());
            peft.SetAdapter("default");
            long expected = Llama.NumHiddenLayers * (2L * 8 + Llama.IntermediateSize);
            Assert.Equal((expected, baseCount + expected), peft.CountParameters());
        }
    }

    [Fact]
    public void PeftFolderWrittenByHandLoadsWithPeftKeys()
    {
        var (model, weights) = LoadGpt2();
        using var _ = model;
        var rng = new Random(10);
        var tensors = new List<NaiveTensor>();
        var vectors = new Dictionary<string, double[]>();
        for (int layer = 0; layer < 2; layer++)
        {
            var attn = Enumerable.Range(0, 48).Select(_ => (float)(0.5 + rng.NextDouble())).ToArray();
            var fc = Enumerable.Range(0, 64).Select(_ => (float)(0.5 + rng.NextDouble())).ToArray();
            tensors.Add(new NaiveTensor($"base_model.model.transformer.h.{layer}.attn.c_attn.ia3_l", NaiveDType.F32, [48, 1], attn));
            tensors.Add(new NaiveTensor($"base_model.model.transformer.h.{layer}.mlp.c_fc.ia3_l", NaiveDType.F32, [1, 16], Enumerable.Repeat(1f, 16).ToArray()));
            // c_fc is named feed-forward here (input scaling), c_proj not targeted.
            vectors[$"h.{layer}.attn.c_attn"] = attn.Select(v => (double)v).ToArray();
            tensors[^1] = new NaiveTensor(tensors[^1].Name, NaiveDType.F32, [1, 16], fc[..16]);
            vectors[$"h.{layer}.mlp.c_fc"] = fc[..16].Select(v => (double)v).ToArray();
        }
        var dir = WriteFolder(tensors, """
            {
              "auto_mapping": null,
              "base_model_name_or_path": "tiny",
              "exclude_modules": null,
              "fan_in_fan_out": true,
              "feedforward_modules": ["c_fc"],
              "inference_mode": true,
              "init_ia3_weights": true,
              "modules_to_save": null,
              "peft_type": "IA3",
              "revision": null,
              "target_modules": ["c_attn", "c_fc"],
              "task_type": "CAUSAL_LM"
            }
            """);
        var peft = PeftModel.Load(model, [dir]);
        Assert.IsType<IA3Model>(peft.TunerOf("default"));
        var ids = RandomIds(11, Gpt2.VocabSize, seed: 11);
        var expected = new NaiveGpt2(Gpt2, weights) { Hooks = Hooks([vectors], new HashSet<string> { "h.0.mlp.c_fc", "h.1.mlp.c_fc" }) }.Logits(ids);
        Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4);

        // Saving writes the same keys and shapes back.
        var saved = TinyCheckpoints.NewTempDirectory();
        peft.Save(saved);
        var read = NaiveSafetensors.Read(Path.Combine(saved, "adapter_model.safetensors"));
        Assert.Equal(tensors.Select(t => t.Name).Order(), read.Keys.Order());
        foreach (var t in tensors) Assert.Equal(t.Values, read[t.Name].Values);
        var config = IA3Config.Load(saved);
        Assert.Equal("IA3", config.PeftType);
        Assert.Equal(["c_fc"], config.FeedforwardModules!.Names);
    }

    static string WriteFolder(IEnumerable<NaiveTensor> tensors, string configJson)
    {
        var dir = TinyCheckpoints.NewTempDirectory("peftsharp-ia3-");
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), configJson);
        return dir;
    }

    [Fact]
    public void BadFoldersGiveOneLineErrorsNamingFileAndKey()
    {
        var (model, _) = LoadGpt2();
        using var _ = model;
        const string config = """{"peft_type": "IA3", "target_modules": ["c_attn"], "feedforward_modules": [], "fan_in_fan_out": true}""";
        // feedforward_modules not among target_modules
        var dir = WriteFolder([], """{"peft_type": "IA3", "target_modules": ["c_attn"], "feedforward_modules": ["c_proj"]}""");
        var e = Assert.Throws<PeftSharpException>(() => PeftModel.Load(model, [dir]));
        Assert.Contains("adapter_config.json", e.Message);
        Assert.Contains("feedforward_modules", e.Message);
        Assert.Contains("c_proj", e.Message);
        // a vector of the wrong shape
        dir = WriteFolder([new NaiveTensor("base_model.model.transformer.h.0.attn.c_attn.ia3_l", NaiveDType.F32, [16, 1], new float[16]),
                           new NaiveTensor("base_model.model.transformer.h.1.attn.c_attn.ia3_l", NaiveDType.F32, [48, 1], new float[48])], config);
        e = Assert.Throws<PeftSharpException>(() => PeftModel.Load(model, [dir]));
        Assert.Contains("adapter_model.safetensors", e.Message);
        Assert.Contains("transformer.h.0.attn.c_attn.ia3_l", e.Message);
        Assert.Contains("[16, 1]", e.Message);
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains("ia3_l"));
        // a pickle instead of safetensors: refused, never read
        dir = TinyCheckpoints.NewTempDirectory();
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), config);
        File.WriteAllBytes(Path.Combine(dir, "adapter_model.bin"), [0x80, 0x02]);
        e = Assert.Throws<PeftSharpException>(() => PeftModel.Load(model, [dir]));
        Assert.Contains("adapter_model.bin", e.Message);
        Assert.Contains("pickle", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void LoraAndIA3ActTogetherOnOneLayer()
    {
        // A mixed model: (IA)³ on c_attn's output, then LoRA on the same layer: y = l ⊙ (W x + b) + s·B·A·x.
        var (model, weights) = LoadGpt2();
        using var _ = model;
        var peft = new PeftModel(model);
        peft.AddAdapter("ia3", new IA3Config { TargetModules = TargetModules.FromNames("c_attn"), FeedforwardModules = TargetModules.FromNames() });
        peft.AddAdapter("lora", new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = TargetModules.FromNames("c_attn"), InitLoraWeights = InitLoraWeights.False }, seed: 12);
        peft.SetAdapter("ia3", "lora");
        var ia3 = peft.Get<IA3Model>()!;
        var lora = peft.Get<LoraModel>()!;
        Randomize(ia3, 13);
        Assert.Equal(2 * 48 + 2 * (2 * 16 + 48 * 2), peft.TrainableParameters().Sum(p => p.Param.numel()));
        var ids = RandomIds(10, Gpt2.VocabSize, seed: 14);
        var layer = ((Gpt2LMHeadModel)model).transformer.h[0].attn.c_attn;
        using var x = randn(5, 16);
        using var got = layer.forward(x);
        using var w = layer.weight.detach();
        using var b = layer.bias!.detach();
        using var l0 = ia3.Layers["transformer.h.0.attn.c_attn"].Vector("ia3").detach().flatten();
        using var delta = lora.LinearLayers["transformer.h.0.attn.c_attn"].DeltaWeight("lora");
        using var want = x.matmul(w).add(b).mul(l0).add(x.matmul(delta.t()));
        Assert.True(got.allclose(want, 1e-5, 1e-5));
        // Merging folds (IA)³ first, then LoRA: the same function.
        var before = Logits(model, ids);
        peft.Merge();
        Assert.True(MaxAbsDiff(before, Logits(model, ids)) < 1e-4);
    }
}
