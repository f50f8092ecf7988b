using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Mixtures;
using PeftSharp.Tuners.Mixtures.MixLora;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.Mixtures;

/// <summary>
/// MixLoRA against a plain-loop GPT-2 whose MLP is replaced by the mixture written row by row: a folder in the reference
/// code's layout written by hand is read, routed (with a tie in layer 1), saved back; gradients; bad configs.
/// </summary>
public class MixLoraTests
{
    static readonly NaiveGpt2Config Gpt2 = LoraTestKit.Gpt2; // E = 16, inner = 64, 2 layers
    const int Experts = 4, TopK = 2, R = 2;
    const double Alpha = 4, Scaling = Alpha / R;

    static (CausalLM Model, Dictionary<string, float[]> Weights) LoadGpt2()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 61 });
        return (ModelLoader.Load(dir), ckpt.Weights.ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    static float[] RandomValues(Random random, int n, double scale) => Enumerable.Range(0, n).Select(_ => (float)((random.NextDouble() * 2 - 1) * scale)).ToArray();

    const string ConfigJson = """
        {
          "bias": "none",
          "peft_type": "MIXLORA",
          "task_type": "CAUSAL_LM",
          "base_model_name_or_path": "tiny",
          "r": 2,
          "lora_alpha": 4,
          "lora_dropout": 0.05,
          "target_modules": ["c_attn", "c_fc", "c_proj"],
          "routing_strategy": "mixlora",
          "num_experts": 4,
          "top_k": 2
        }
        """;

    /// <summary>A hand-written adapter in the reference layout: per layer attention LoRAs, the gate, and per-expert LoRAs.</summary>
    static (string Dir, Dictionary<string, NaiveTensor> Tensors) WriteReferenceFolder(int seed, bool zeroGateInLayer1)
    {
        var random = new Random(seed);
        int e = Gpt2.NEmbd, inner = Gpt2.InnerDim;
        var tensors = new List<NaiveTensor>();
        void Add(string name, int[] shape, float[] values) => tensors.Add(new NaiveTensor(name, NaiveDType.F32, shape, values));
        for (int l = 0; l < Gpt2.NLayer; l++)
        {
            string p = $"mixlora.layers.{l}";
            Add($"{p}.self_attn.c_attn.lora_A.weight", [R, e], RandomValues(random, R * e, 0.3));
            Add($"{p}.self_attn.c_attn.lora_B.weight", [3 * e, R], RandomValues(random, 3 * e * R, 0.3));
            Add($"{p}.self_attn.c_proj.lora_A.weight", [R, e], RandomValues(random, R * e, 0.3));
            Add($"{p}.self_attn.c_proj.lora_B.weight", [e, R], RandomValues(random, e * R, 0.3));
            Add($"{p}.mlp.moe_gate.weight", [Experts, e], l == 1 && zeroGateInLayer1 ? new float[Experts * e] : RandomValues(random, Experts * e, 1.0));
            for (int x = 0; x < Experts; x++)
            {
                Add($"{p}.mlp.c_fc.experts.{x}.lora_A.weight", [R, e], RandomValues(random, R * e, 0.3));
                Add($"{p}.mlp.c_fc.experts.{x}.lora_B.weight", [inner, R], RandomValues(random, inner * R, 0.3));
                Add($"{p}.mlp.c_proj.experts.{x}.lora_A.weight", [R, inner], RandomValues(random, R * inner, 0.3));
                Add($"{p}.mlp.c_proj.experts.{x}.lora_B.weight", [e, R], RandomValues(random, e * R, 0.3));
            }
        }
        var dir = TinyCheckpoints.NewTempDirectory("peftsharp-mixlora-");
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), ConfigJson);
        return (dir, tensors.ToDictionary(t => t.Name));
    }

    /// <summary>The naive GPT-2 with the attention LoRAs folded into its weights and the mixture as its MLP.</summary>
    static NaiveGpt2 Reference(Dictionary<string, float[]> baseWeights, Dictionary<string, NaiveTensor> t)
    {
        int e = Gpt2.NEmbd, inner = Gpt2.InnerDim;
        var weights = LoraTestKit.Copy(baseWeights);
        for (int l = 0; l < Gpt2.NLayer; l++)
        {
            string p = $"mixlora.layers.{l}.self_attn";
            LoraTestKit.AddTo(weights, $"transformer.h.{l}.attn.c_attn.weight",
                LoraTestKit.Delta(t[$"{p}.c_attn.lora_A.weight"].Values, t[$"{p}.c_attn.lora_B.weight"].Values, R, e, 3 * e, Scaling), conv1d: true);
            LoraTestKit.AddTo(weights, $"transformer.h.{l}.attn.c_proj.weight",
                LoraTestKit.Delta(t[$"{p}.c_proj.lora_A.weight"].Values, t[$"{p}.c_proj.lora_B.weight"].Values, R, e, e, Scaling), conv1d: true);
        }
        double[] Mixture(int l, double[] x)
        {
            string p = $"mixlora.layers.{l}.mlp";
            var (chosen, w, _) = MixtureReference.TopK(MixtureReference.Logits(t[$"{p}.moe_gate.weight"].Values, x, Experts), TopK);
            var output = new double[e];
            for (int slot = 0; slot < TopK; slot++)
            {
                int ex = chosen[slot];
                var h = NaiveOps.Add(NaiveOps.Conv1D(x, baseWeights[$"transformer.h.{l}.mlp.c_fc.weight"], baseWeights[$"transformer.h.{l}.mlp.c_fc.bias"], e, inner),
                    MixtureReference.LoraDelta(t[$"{p}.c_fc.experts.{ex}.lora_A.weight"].Values, t[$"{p}.c_fc.experts.{ex}.lora_B.weight"].Values, 0, R, e, inner, x, Scaling));
                var a = h.Select(NaiveOps.GeluNew).ToArray();
                var y = NaiveOps.Add(NaiveOps.Conv1D(a, baseWeights[$"transformer.h.{l}.mlp.c_proj.weight"], baseWeights[$"transformer.h.{l}.mlp.c_proj.bias"], inner, e),
                    MixtureReference.LoraDelta(t[$"{p}.c_proj.experts.{ex}.lora_A.weight"].Values, t[$"{p}.c_proj.experts.{ex}.lora_B.weight"].Values, 0, R, inner, e, a, Scaling));
                for (int j = 0; j < e; j++) output[j] += w[slot] * y[j];
            }
            return output;
        }
        return new NaiveGpt2(Gpt2, weights)
        {
            Hooks = new NaiveHooks { SubLayer = (l, kind, residual, input, output) => kind == "mlp" ? Mixture(l, input) : output },
        };
    }

    [Fact]
    public void ReferenceLayoutFolderMatchesThePlainLoopMixture()
    {
        var (model, weights) = LoadGpt2();
        using var _ = model;
        var (dir, tensors) = WriteReferenceFolder(seed: 5, zeroGateInLayer1: true);
        var peft = PeftModel.Load(model, [dir]);
        var mix = Assert.IsType<MixLoraModel>(peft.TunerOf("default"));
        Assert.Equal(0.001, mix.Configs["default"].RouterAuxLossCoef); // the reference code's default
        var ids = RandomIds(12, Gpt2.VocabSize, seed: 7);
        var expected = Reference(weights, tensors).Logits(ids);
        Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4, $"max diff {MaxAbsDiff(expected, Logits(model, ids))}");
        using (peft.DisableAdapters())
            Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, weights).Logits(ids), Logits(model, ids)) < 1e-4);

        // Saved back: the same keys and values, and the reference fields.
        var saved = TinyCheckpoints.NewTempDirectory();
        peft.Save(saved);
        var read = NaiveSafetensors.Read(Path.Combine(saved, "adapter_model.safetensors"));
        Assert.Equal(tensors.Keys.Order(), read.Keys.Order());
        foreach (var (name, t) in tensors) Assert.Equal(t.Values, read[name].Values);
        var config = MixLoraConfig.Load(saved);
        Assert.Equal(("MIXLORA", 4, 2, "mixlora"), (config.PeftType, config.NumExperts, config.TopK, config.RoutingStrategy));
        Assert.Equal(["c_attn", "c_fc", "c_proj"], config.TargetModules!.Names!.Order());
    }

    [Fact]
    public void RouterStatisticsCountEveryTokensChoices()
    {
        var (model, _) = LoadGpt2();
        using var _m = model;
        var (dir, _) = WriteReferenceFolder(seed: 6, zeroGateInLayer1: true);
        var peft = PeftModel.Load(model, [dir]);
        var mix = peft.Get<MixLoraModel>()!;
        var stats = new RouterStatistics();
        mix.Log.Statistics = stats;
        Logits(model, RandomIds(10, Gpt2.VocabSize, seed: 8));
        Assert.Equal(["layer 0", "layer 1"], stats.Routers.Select(r => r.Label));
        Assert.All(stats.Routers, r => Assert.Equal(20, r.Counts.Sum()));
        // Layer 1's gate is zero: all probabilities tie, every token goes to experts 0 and 1; entropy is log 4.
        Assert.Equal([10.0, 10, 0, 0], stats.Routers[1].Counts);
        Assert.Equal(Math.Log(4), stats.Routers[1].MeanEntropy, 5);
        Assert.Equal(1.0, stats.Routers[1].CoefficientOfVariation, 6);
    }

    [Fact]
    public void GradientsReachOnlyTheExpertsRoutersAndAttentionLoras()
    {
        var (model, _) = LoadGpt2();
        using var _m = model;
        var mix = MixLoraModel.Create(model, new MixLoraConfig { NumExperts = 4, TopK = 2, R = 2, LoraDropout = 0 }, seed: 3);
        using (no_grad())
            foreach (var (_, p, _) in mix.AdapterParameters()) p.add_(rand_like(p).sub_(0.5).mul_(0.2)); // B ≠ 0
        model.train();
        mix.Log.RecordForLoss = true;
        using (var scope = NewDisposeScope())
        {
            var ids = tensor(RandomIds(10, Gpt2.VocabSize, seed: 9).Select(i => (long)i).ToArray()).unsqueeze(0);
            var loss = model.Forward(ids).pow(2).mean();
            var aux = mix.WeightedAuxiliaryLoss()!;
            loss.add(aux).backward();
        }
        var adapterNames = mix.AdapterParameters().Select(p => p.Name).ToHashSet();
        foreach (var (name, p) in model.named_parameters())
        {
            if (adapterNames.Contains(name))
                Assert.True(p.grad is not null && p.grad.abs().sum().item<float>() > 0, $"{name} got no gradient");
            else
                Assert.True(p.grad is null || p.grad.abs().sum().item<float>() == 0, $"{name} (frozen) got a gradient");
        }
        // Expected adapter parameters: per layer the gate, c_fc and c_proj experts, and LoRA on c_attn and attn.c_proj.
        Assert.Equal(2 * (1 + 4 + 4), adapterNames.Count);
        mix.Log.Clear();
    }

    [Fact]
    public void TopKAboveTheExpertCountIsAOneLineError()
    {
        var ex = Assert.Throws<PeftSharpException>(() => MixLoraConfig.FromJson(ConfigJson.Replace("\"top_k\": 2", "\"top_k\": 5")));
        Assert.Contains("top_k", ex.Message);
        Assert.Contains("num_experts (4)", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }
}
