using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

public class AdapterManagementTests
{
    static LoraConfig Random(int r, params string[] targets) =>
        new() { R = r, LoraAlpha = r, TargetModules = TargetModules.FromNames(targets), InitLoraWeights = InitLoraWeights.False };

    static (CausalLM Model, TinyCheckpoint Ckpt) TinyLlama(int seed)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = seed });
        return (ModelLoader.Load(dir), ckpt);
    }

    static Dictionary<string, float[]> WithAdapters(LoraModel lora, Dictionary<string, float[]> weights, params string[] adapters)
    {
        var expected = Copy(weights);
        foreach (var (path, layer) in lora.LinearLayers)
            foreach (var a in adapters.Where(layer.Adapters.ContainsKey))
            {
                var s = layer.Adapters[a];
                AddTo(expected, path + ".weight", Delta(Values(layer.A(a).weight), Values(layer.B(a).weight), s.Rank,
                    (int)layer.Host.InFeatures, (int)layer.Host.OutFeatures, s.Scaling), conv1d: false);
            }
        return expected;
    }

    [Fact]
    public void AdaptersSwitchByNameAndActiveOnesAreSummed()
    {
        var (model, ckpt) = TinyLlama(51);
        using var _ = model;
        var lora = LoraModel.Create(model, Random(2, "q_proj"), "first", seed: 1);
        lora.AddAdapter("second", Random(3, "v_proj", "q_proj"), seed: 2);
        var ids = RandomIds(10, Llama.VocabSize, 3);
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, WithAdapters(lora, ckpt.Weights, "first")).Logits(ids), Logits(model, ids)) < 1e-4);
        lora.SetAdapter("second");
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, WithAdapters(lora, ckpt.Weights, "second")).Logits(ids), Logits(model, ids)) < 1e-4);
        lora.SetAdapter("first", "second");
        var both = new NaiveLlama(Llama, WithAdapters(lora, ckpt.Weights, "first", "second")).Logits(ids);
        Assert.True(MaxAbsDiff(both, Logits(model, ids)) < 1e-4);
        using (lora.DisableAdapters())
            Assert.True(MaxAbsDiff(new NaiveLlama(Llama, ckpt.Weights).Logits(ids), Logits(model, ids)) < 1e-4);
        Assert.True(MaxAbsDiff(both, Logits(model, ids)) < 1e-4);
        // Only active adapters train.
        lora.SetAdapter("second");
        Assert.All(lora.AdapterParameters(), p => Assert.Equal(p.Adapter == "second", p.Param.requires_grad));
        lora.DeleteAdapter("first");
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains(".first"));
    }

    [Fact]
    public void RowAdaptersPickAnAdapterPerBatchRow()
    {
        var (model, ckpt) = TinyLlama(52);
        using var _ = model;
        var lora = LoraModel.Create(model, Random(2, "q_proj", "v_proj"), "a", seed: 4);
        lora.AddAdapter("b", Random(2, "q_proj", "o_proj"), seed: 5);
        var ids = RandomIds(8, Llama.VocabSize, 6);
        var batch = tensor(Enumerable.Repeat(ids, 3).SelectMany(x => x).Select(i => (long)i).ToArray()).view(3, 8);
        Tensor logits;
        using (lora.UseRowAdapters(["a", "__base__", "b"]))
        using (no_grad())
            logits = model.Forward(batch);
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, WithAdapters(lora, ckpt.Weights, "a")).Logits(ids), ToArray(logits[0])) < 1e-4);
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, ckpt.Weights).Logits(ids), ToArray(logits[1])) < 1e-4);
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, WithAdapters(lora, ckpt.Weights, "b")).Logits(ids), ToArray(logits[2])) < 1e-4);
    }

    [Fact]
    public void RowAdaptersMixRanksDoraAndBaseInOneBatch()
    {
        var (model, ckpt) = TinyLlama(55);
        using var _ = model;
        var lora = LoraModel.Create(model, Random(2, "q_proj", "v_proj"), "r2", seed: 11);
        lora.AddAdapter("r5", Random(5, "q_proj", "up_proj"), seed: 12);
        var dora = Random(3, "q_proj", "down_proj");
        dora.UseDora = true;
        lora.AddAdapter("dora", dora, seed: 13);
        using (no_grad()) // a magnitude that differs from ‖W + ΔW‖, so DoRA is more than LoRA
            foreach (var layer in lora.LinearLayers.Values.Where(l => l.Magnitude("dora") is not null)) layer.Magnitude("dora")!.mul_(1.3);
        var ids = RandomIds(6, Llama.VocabSize, 14);
        string[] rows = ["r5", "dora", "__base__", "r2", "r5", "dora"];
        var batch = tensor(Enumerable.Repeat(ids, rows.Length).SelectMany(x => x).Select(i => (long)i).ToArray()).view(rows.Length, 6);
        Tensor mixed;
        using (lora.UseRowAdapters(rows))
        using (no_grad())
            mixed = model.Forward(batch);
        for (int r = 0; r < rows.Length; r++)
        {
            float[,] expected;
            if (rows[r] == "__base__") expected = new NaiveLlama(Llama, ckpt.Weights).Logits(ids);
            else
            {
                lora.SetAdapter(rows[r]);
                using (no_grad()) expected = ToArray(model.Forward(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0))[0]);
            }
            Assert.True(MaxAbsDiff(expected, ToArray(mixed[r])) < 1e-4, $"row {r} ({rows[r]})");
        }
        lora.SetAdapter("r2");
        using (no_grad())
            Assert.True(MaxAbsDiff(new NaiveLlama(Llama, WithAdapters(lora, ckpt.Weights, "r2")).Logits(ids), ToArray(mixed[3])) < 1e-4);
    }

    [Fact]
    public void SafeMergeRefusesNonFiniteResultsAndLeavesWeightsAlone()
    {
        var (model, ckpt) = TinyLlama(53);
        using var _ = model;
        var lora = LoraModel.Create(model, Random(2, "q_proj"), seed: 7);
        var layer = lora.LinearLayers["model.layers.0.self_attn.q_proj"];
        using (no_grad()) layer.B("default").weight[0, 0] = tensor(float.PositiveInfinity);
        var e = Assert.Throws<PeftSharpException>(() => lora.Merge(safe: true));
        Assert.Contains("NaN or infinite", e.Message);
        Assert.Equal(ckpt.Weights["model.layers.0.self_attn.q_proj.weight"], Values(layer.Host.weight));
    }

    [Fact]
    public void BaseIsFrozenAndBiasAndModulesToSaveFollowTheConfig()
    {
        var (model, _) = TinyLlama(54);
        using var __ = model;
        var config = Random(2, "q_proj");
        config.ModulesToSave = ["lm_head"];
        var lora = LoraModel.Create(model, config, seed: 8);
        var trainable = lora.TrainableParameters().Select(p => p.Name).ToHashSet();
        Assert.Contains("lm_head.weight", trainable);
        Assert.Contains("model.layers.1.self_attn.q_proj.lora_B.default.weight", trainable);
        Assert.DoesNotContain("model.layers.0.self_attn.q_proj.weight", trainable);
        // all params = base + LoRA + one copy of lm_head for the adapter (as PEFT's ModulesToSaveWrapper).
        long baseCount = model.parameters().Where(p => !p.requires_grad).Sum(p => p.numel()) + Llama.VocabSize * Llama.HiddenSize;
        long loraCount = 2 * (16 * 2 + 2 * 16); // q_proj in 2 layers: A [2, 16] + B [16, 2]
        Assert.Equal((loraCount + Llama.VocabSize * Llama.HiddenSize, baseCount + loraCount + Llama.VocabSize * Llama.HiddenSize), lora.CountParameters());

        var dir = TinyCheckpoints.NewTempDirectory();
        var gpt = TinyCheckpoints.WriteGpt2(dir, Gpt2);
        using var g = ModelLoader.Load(dir);
        var biasAll = new LoraConfig { TargetModules = TargetModules.FromNames("c_attn"), Bias = "all" };
        var lg = LoraModel.Create(g, biasAll);
        Assert.All(g.named_parameters().Where(p => p.name.EndsWith(".bias") && !p.name.Contains("lora")), p => Assert.True(p.parameter.requires_grad, p.name));
        Assert.False(g.named_parameters().First(p => p.name == "transformer.h.0.attn.c_attn.weight").parameter.requires_grad);
    }

    [Fact]
    public void ParameterReportMatchesPeftsPublishedNumbers()
    {
        var gpt2 = ModelConfig.FromJson("""{"model_type":"gpt2","vocab_size":50257,"n_embd":768,"n_layer":12,"n_head":12,"n_positions":1024}""");
        using var g = ModelLoader.CreateMeta(gpt2);
        Assert.Equal("trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364",
            LoraModel.Create(g, new LoraConfig { R = 8 }).ParameterReport());
        // PEFT's README: LLaMA-7B with r=8 on q_proj, v_proj — 4,194,304 of 6,742,609,920 (0.0622%).
        var llama = ModelConfig.FromJson("""{"model_type":"llama","vocab_size":32000,"hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"max_position_embeddings":2048}""");
        using var l = ModelLoader.CreateMeta(llama, ScalarType.BFloat16);
        Assert.Equal("trainable params: 4,194,304 || all params: 6,742,609,920 || trainable%: 0.0622",
            LoraModel.Create(l, new LoraConfig { R = 8 }).ParameterReport());
    }

    [Fact]
    public void TargetingFollowsPeftRules()
    {
        var (model, _) = TinyLlama(55);
        using var _m = model;
        var e = Assert.Throws<PeftSharpException>(() => LoraModel.Create(model, new LoraConfig { TargetModules = TargetModules.FromNames("c_attn") }));
        Assert.Contains("q_proj", e.Message);
        Assert.Contains("down_proj", e.Message);
        Assert.DoesNotContain("\n", e.Message);

        var all = LoraModel.Create(model, new LoraConfig { TargetModules = TargetModules.AllLinear });
        Assert.Equal(2 * 7, all.LinearLayers.Count); // q, k, v, o, gate, up, down per layer; never lm_head
        Assert.DoesNotContain("lm_head", all.LinearLayers.Keys);
        all.Unload();

        var some = LoraModel.Create(model, new LoraConfig
        {
            TargetModules = TargetModules.FromRegex(@".*\.(q|k)_proj"),
            ExcludeModules = TargetModules.FromNames("model.layers.0.self_attn.k_proj"),
            RankPattern = new(StringComparer.Ordinal) { ["k_proj"] = 5 },
        });
        Assert.Equal(["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.q_proj"], some.LinearLayers.Keys.Order());
        Assert.Equal(5, some.LinearLayers["model.layers.1.self_attn.k_proj"].Adapters["default"].Rank);
        Assert.Equal(8, some.LinearLayers["model.layers.1.self_attn.q_proj"].Adapters["default"].Rank);
    }

    [Fact]
    public void LoraPlusGivesBFactorsTheLargerLearningRate()
    {
        var (model, _) = TinyLlama(56);
        using var _m = model;
        var lora = LoraModel.Create(model, new LoraConfig { TargetModules = TargetModules.FromNames("q_proj") });
        var groups = LoraPlus.Groups(lora, 1e-4, 16, weightDecay: 0.01);
        var a = groups.Single(g => g.Name == "groupA");
        var b = groups.Single(g => g.Name == "groupB");
        Assert.All(a.Parameters, p => Assert.Contains(".lora_A.", p.Name));
        Assert.All(b.Parameters, p => Assert.Contains(".lora_B.", p.Name));
        Assert.Equal(1e-4, a.LearningRate);
        Assert.Equal(16e-4, b.LearningRate, 12);
        Assert.Equal(4, a.Parameters.Count + b.Parameters.Count);
    }
}
