using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.AdaLora;
using TorchSharp;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tests.Tuners.AdaLora;

/// <summary>Plain-loop arithmetic for AdaLoRA's SVD-form update.</summary>
internal static class AdaLoraTestKit
{
    /// <summary>ΔW[o, i] = Σ_k B[o, k]·E[k]·A[k, i] · α / (ranknum + 1e-5), by loops in double.</summary>
    public static double[,] SvdDelta(float[] a, float[] e, float[] b, int r, int inDim, int outDim, double alpha, double ranknum)
    {
        double scale = alpha / (ranknum + 1e-5);
        var d = new double[outDim, inDim];
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < inDim; i++)
            {
                double sum = 0;
                for (int k = 0; k < r; k++) sum += (double)b[o * r + k] * e[k] * a[k * inDim + i];
                d[o, i] = scale * sum;
            }
        return d;
    }

    /// <summary>The base weights plus every layer's AdaLoRA delta (adapter "default"), for the reference models.</summary>
    public static Dictionary<string, float[]> Merged(AdaLoraModel ada, Dictionary<string, float[]> weights, double alpha, double ranknum)
    {
        var expected = Copy(weights);
        foreach (var (path, layer) in ada.Layers)
        {
            int r = layer.RankOf("default"), inDim = (int)layer.Host.InFeatures, outDim = (int)layer.Host.OutFeatures;
            var delta = SvdDelta(Values(layer.A("default")), Values(layer.E("default")), Values(layer.B("default")), r, inDim, outDim, alpha, ranknum);
            AddTo(expected, path + ".weight", delta, conv1d: layer.Host.FanInFanOut);
        }
        return expected;
    }
}

/// <summary>AdaLoRA's forward, regulariser, budget schedule and importance scores against hand computation.</summary>
public class AdaLoraMathTests
{
    static AdaLoraConfig Config(int initR, double alpha, params string[] targets) => new()
    {
        InitR = initR, TargetR = 1, LoraAlpha = alpha, TotalStep = 100, InitLoraWeights = InitLoraWeights.False,
        TargetModules = TargetModules.FromNames(targets),
    };

    [Fact]
    public void Gpt2Conv1DForwardEqualsReferenceOnWPlusPEQ()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 61 });
        using var model = ModelLoader.Load(dir);
        var ada = AdaLoraModel.Create(model, Config(5, 7, "c_attn"), seed: 2);
        Assert.True(ada.Configs["default"].FanInFanOut);
        var layer = ada.Layers["transformer.h.0.attn.c_attn"];
        Assert.Equal([5, 16], layer.A("default").shape);
        Assert.Equal([5, 1], layer.E("default").shape);
        Assert.Equal([48, 5], layer.B("default").shape);
        Assert.Equal(5f, layer.Ranknum("default").item<float>());
        Assert.False(layer.Ranknum("default").requires_grad);
        Assert.Equal(["transformer.h.0.attn.c_attn.lora_A.default", "transformer.h.0.attn.c_attn.lora_B.default", "transformer.h.0.attn.c_attn.lora_E.default"],
            ada.TrainableParameters().Select(p => p.Name).Where(n => n.Contains(".h.0.")).Order(StringComparer.Ordinal));

        var ids = RandomIds(13, Gpt2.VocabSize, 3);
        var want = new NaiveGpt2(Gpt2, AdaLoraTestKit.Merged(ada, ckpt.Weights, alpha: 7, ranknum: 5)).Logits(ids);
        var baseLogits = new NaiveGpt2(Gpt2, ckpt.Weights).Logits(ids);
        Assert.True(MaxAbsDiff(want, baseLogits) > 1e-2);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        ada.Merge();
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        ada.Unmerge();
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        using (ada.DisableAdapters()) Assert.True(MaxAbsDiff(baseLogits, Logits(model, ids)) < 1e-4);
        var plain = (CausalLM)ada.MergeAndUnload();
        Assert.DoesNotContain(plain.named_parameters(), p => p.name.Contains("lora_") || p.name.Contains("ranknum"));
        Assert.True(MaxAbsDiff(want, Logits(plain, ids)) < 1e-4);
    }

    [Fact]
    public void LlamaForwardEqualsReferenceAndPrunedTripletsDropOut()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 62 });
        using var model = ModelLoader.Load(dir);
        var ada = AdaLoraModel.Create(model, Config(4, 3, "q_proj", "v_proj"), seed: 4);
        Assert.Equal(4, ada.Layers.Count);
        var ids = RandomIds(11, Llama.VocabSize, 5);
        Assert.True(MaxAbsDiff(new NaiveLlama(Llama, AdaLoraTestKit.Merged(ada, ckpt.Weights, 3, 4)).Logits(ids), Logits(model, ids)) < 1e-4);

        // Pruning a triplet = E entry 0; ranknum (hence the scaling) stays init_r.
        using (no_grad()) ada.Layers["model.layers.1.self_attn.v_proj"].E("default")[2].zero_();
        var want = new NaiveLlama(Llama, AdaLoraTestKit.Merged(ada, ckpt.Weights, 3, 4)).Logits(ids);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void DefaultInitIsIdentityWithSmallGaussianFactors()
    {
        using var model = Training.TrainingTestKit.LoadLlama(seed: 3);
        var ids = RandomIds(9, 64, 1);
        var before = Logits(model, ids);
        var ada = AdaLoraModel.Create(model, new AdaLoraConfig { TotalStep = 10 }, seed: 5);   // llama default: q_proj, v_proj; init_r 12
        Assert.Equal(4, ada.Layers.Count);
        Assert.Equal(before, Logits(model, ids));
        var layer = ada.Layers["model.layers.0.self_attn.q_proj"];
        Assert.Equal(0f, layer.E("default").abs().max().item<float>());
        foreach (var p in new[] { layer.A("default"), layer.B("default") })
        {
            double std = p.std().item<float>();
            Assert.InRange(std, 0.015, 0.025);
        }
        Assert.Equal(12, layer.RankOf("default"));
    }

    sealed class TwoLayerNet : nn.Module<Tensor, Tensor>
    {
        public Linear first = new(5, 4, hasBias: true);
        public Linear second = new(4, 6, hasBias: false, fanInFanOut: true);
        public TwoLayerNet() : base(nameof(TwoLayerNet))
        {
            RegisterComponents();
            using var _ = no_grad();
            foreach (var p in parameters()) p.copy_(randn(p.shape, generator: new Generator(3)));
        }
        public override Tensor forward(Tensor x) => second.forward(nn.functional.relu(first.forward(x)));
    }

    static AdaLoraModel OnNet(TwoLayerNet net, double orthRegWeight = 0.5) =>
        AdaLoraModel.Create(net, null, new AdaLoraConfig
        {
            InitR = 3, TargetR = 1, TotalStep = 10, OrthRegWeight = orthRegWeight, InitLoraWeights = InitLoraWeights.False,
            TargetModules = TargetModules.FromNames("first", "second"),
        }, seed: 11);

    [Fact]
    public void OrthogonalRegulariserIsTheMeanFrobeniusNormOfGramMinusIdentity()
    {
        using var net = new TwoLayerNet();
        var ada = OnNet(net, orthRegWeight: 0.3);
        double sum = 0;
        int count = 0;
        foreach (var layer in ada.Layers.Values)
        {
            int r = 3, inDim = (int)layer.Host.InFeatures, outDim = (int)layer.Host.OutFeatures;
            var a = Values(layer.A("default"));
            var b = Values(layer.B("default"));
            double na = 0, nb = 0;
            for (int i = 0; i < r; i++)
                for (int j = 0; j < r; j++)
                {
                    double aa = 0, bb = 0;
                    for (int k = 0; k < inDim; k++) aa += (double)a[i * inDim + k] * a[j * inDim + k];   // (A·Aᵀ)[i, j]
                    for (int o = 0; o < outDim; o++) bb += (double)b[o * r + i] * b[o * r + j];      // (Bᵀ·B)[i, j]
                    double id = i == j ? 1 : 0;
                    na += (aa - id) * (aa - id);
                    nb += (bb - id) * (bb - id);
                }
            sum += Math.Sqrt(na) + Math.Sqrt(nb);
            count += 2;
        }
        double want = 0.3 * sum / count;
        var got = ada.OrthogonalRegularization()!;
        Assert.Equal(want, got.item<float>(), want * 1e-5);

        // Its gradient reaches A and B (not E), as a term of the loss.
        got.backward();
        var l = ada.Layers["first"];
        Assert.True(l.A("default").grad!.abs().sum().item<float>() > 0);
        Assert.True(l.B("default").grad!.abs().sum().item<float>() > 0);
        Assert.True(l.E("default").grad is null || l.E("default").grad!.abs().sum().item<float>() == 0);
    }

    [Fact]
    public void OrthonormalFactorsHaveZeroRegulariser()
    {
        using var net = new TwoLayerNet();
        var ada = OnNet(net);
        using (no_grad())
            foreach (var layer in ada.Layers.Values)
            {
                layer.A("default").copy_(eye(3, layer.Host.InFeatures));
                layer.B("default").copy_(eye(layer.Host.OutFeatures, 3));
            }
        Assert.Equal(0f, ada.OrthogonalRegularization()!.item<float>());
    }

    [Fact]
    public void BudgetScheduleFollowsPeftsCubicFormula()
    {
        // 4 layers × init_r 12 = 48 → 4 × target_r 4 = 16, tinit 10, tfinal 20, total 100, deltaT 5. The expected values
        // are int((48 − 16)·(1 − (t − 10)/70)³ + 16), worked out by hand, and the allocation flag t % 5 == 0.
        using var model = Training.TrainingTestKit.LoadLlama(seed: 4);
        var ada = AdaLoraModel.Create(model, new AdaLoraConfig { InitR = 12, TargetR = 4, Tinit = 10, Tfinal = 20, DeltaT = 5, TotalStep = 100 });
        var allocator = ada.Allocator!;
        Assert.Equal(48, allocator.InitialBudget);
        Assert.Equal(16, allocator.TargetBudget);
        (long Step, int Budget, bool Mask)[] expected =
        [
            (0, 48, false), (10, 48, false), (11, 46, false), (15, 41, true), (33, 25, false), (45, 20, true),
            (79, 16, false), (80, 16, true), (81, 16, true), (100, 16, true),
        ];
        foreach (var (step, budget, mask) in expected) Assert.Equal((budget, mask), allocator.BudgetSchedule(step));
    }

    [Fact]
    public void ImportanceIsTheSmoothedSensitivityTimesItsUncertaintyAndPruningKeepsTheBest()
    {
        using var net = new TwoLayerNet();
        var ada = OnNet(net);
        var allocator = ada.Allocator!;
        var factors = ada.Layers.SelectMany(l => new[] { ($"{l.Key}.A", l.Value.A("default")), ($"{l.Key}.B", l.Value.B("default")), ($"{l.Key}.E", l.Value.E("default")) }).ToList();
        // Gradient g = C exactly: backward of Σ sum(p ⊙ C).
        var gen = new Generator(21);
        var c1 = factors.ToDictionary(f => f.Item1, f => randn(f.Item2.shape, generator: gen));
        var c2 = factors.ToDictionary(f => f.Item1, f => randn(f.Item2.shape, generator: gen));
        foreach (var c in new[] { c1, c2 })
        {
            foreach (var (_, p) in factors) p.grad?.zero_();
            factors.Select(f => f.Item2.mul(c[f.Item1]).sum()).Aggregate((x, y) => x.add(y)).backward();
            allocator.UpdateImportance();
        }

        // By hand: I_t = |p·g_t|; Ī_t = 0.85·Ī_{t−1} + 0.15·I_t; Ū_t = 0.85·Ū_{t−1} + 0.15·|I_t − Ī_t|; score = Ī·Ū.
        double[] Score(string name)
        {
            var p = Values(factors.Single(f => f.Item1 == name).Item2);
            var g1 = Values(c1[name]);
            var g2 = Values(c2[name]);
            var s = new double[p.Length];
            for (int i = 0; i < p.Length; i++)
            {
                double i1 = Math.Abs((double)p[i] * g1[i]), i2 = Math.Abs((double)p[i] * g2[i]);
                double avg1 = 0.15 * i1, unc1 = 0.15 * Math.Abs(i1 - avg1);
                double avg2 = 0.85 * avg1 + 0.15 * i2, unc2 = 0.85 * unc1 + 0.15 * Math.Abs(i2 - avg2);
                s[i] = avg2 * unc2;
            }
            return s;
        }
        var want = new Dictionary<string, double[]>();
        foreach (var (path, layer) in ada.Layers)
        {
            int inDim = (int)layer.Host.InFeatures, outDim = (int)layer.Host.OutFeatures;
            var a = Score($"{path}.A");
            var b = Score($"{path}.B");
            var e = Score($"{path}.E");
            want[path] = Enumerable.Range(0, 3).Select(k =>
                e[k] + Enumerable.Range(0, inDim).Average(i => a[k * inDim + i]) + Enumerable.Range(0, outDim).Average(o => b[o * 3 + k])).ToArray();
        }
        var got = allocator.TripletScores();
        foreach (var (path, scores) in want)
        {
            var g = Values(got[path]);
            for (int k = 0; k < 3; k++) Assert.Equal(scores[k], g[k], Math.Abs(scores[k]) * 1e-4 + 1e-12);
        }

        // Keep the 2 best of 6 triplets across both layers; the others get E = 0, the kept ones are untouched.
        var eBefore = ada.Layers.ToDictionary(l => l.Key, l => Values(l.Value.E("default")));
        var ranked = want.SelectMany(kv => kv.Value.Select((s, k) => (kv.Key, k, s))).OrderByDescending(t => t.s).ToList();
        var keep = ranked.Take(2).Select(t => (t.Key, t.k)).ToHashSet();
        var pattern = allocator.MaskToBudget(2);
        Assert.Equal(["first.lora_E", "second.lora_E"], pattern.Keys.Order(StringComparer.Ordinal));
        foreach (var (path, layer) in ada.Layers)
        {
            var e = Values(layer.E("default"));
            for (int k = 0; k < 3; k++)
            {
                bool kept = keep.Contains((path, k));
                Assert.Equal(kept, pattern[$"{path}.lora_E"][k]);
                Assert.Equal(kept ? eBefore[path][k] : 0f, e[k]);
            }
        }
    }

    [Fact]
    public void ConfigHasPeftsFieldsDefaultsAndChecks()
    {
        var c = new AdaLoraConfig { TotalStep = 100 };
        string json = c.ToJson();
        foreach (var line in new[] { "\"peft_type\": \"ADALORA\"", "\"target_r\": 8", "\"init_r\": 12", "\"tinit\": 0", "\"tfinal\": 0", "\"deltaT\": 1",
                     "\"beta1\": 0.85", "\"beta2\": 0.85", "\"orth_reg_weight\": 0.5", "\"total_step\": 100", "\"rank_pattern\": null", "\"r\": 8", "\"lora_alpha\": 8" })
            Assert.Contains("\n  " + line, json);

        using var tmp = new TempDir();
        var read = AdaLoraConfig.Load(tmp.WithConfig(
            "{\"peft_type\": \"ADALORA\", \"total_step\": 50, \"beta1\": 1, \"rank_pattern\": {\"model.layers.0.self_attn.q_proj.lora_E\": [true, false, true]}}"));
        Assert.Equal([true, false, true], read.RankPattern!["model.layers.0.self_attn.q_proj.lora_E"]);
        Assert.Contains("\"beta1\": 1,", read.ToJson());   // Python keeps the literal it read
        Assert.Contains("\"orth_reg_weight\": 1.0,", new AdaLoraConfig { TotalStep = 5, OrthRegWeight = 1 }.ToJson());   // a float field
        Assert.Contains("\"model.layers.0.self_attn.q_proj.lora_E\": [\n      true,\n      false,\n      true\n    ]", read.ToJson());

        string Error(string body) => Assert.Throws<PeftSharpException>(() => AdaLoraConfig.Load(tmp.WithConfig("{\"peft_type\": \"ADALORA\"" + body + "}", Guid.NewGuid().ToString("N")))).Message;
        Assert.Contains("total_step", Error(""));
        Assert.Contains("total_step", Error(", \"total_step\": 0"));
        Assert.Contains("budgeting phase", Error(", \"total_step\": 10, \"tinit\": 6, \"tfinal\": 4"));
        Assert.Contains("orth_reg_weight", Error(", \"total_step\": 10, \"orth_reg_weight\": -0.1"));
        Assert.Contains("DoRA", Error(", \"total_step\": 10, \"use_dora\": true"));
        Assert.Contains("rank_pattern", Error(", \"total_step\": 10, \"rank_pattern\": {\"x.lora_E\": [1, 0]}"));
        Assert.Contains("\"LORA\"", Assert.Throws<PeftSharpException>(() => AdaLoraConfig.Load(tmp.WithConfig("{\"peft_type\": \"LORA\"}", "lora"))).Message);
        Assert.Contains("`r` is not used", Assert.Single(new AdaLoraConfig { TotalStep = 5, R = 4 }.Normalize()));
    }
}
