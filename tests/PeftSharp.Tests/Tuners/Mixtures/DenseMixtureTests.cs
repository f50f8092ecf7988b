using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Mixtures.MoLora;
using PeftSharp.Tuners.Mixtures.MoV;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.Mixtures;

/// <summary>MoLoRA and MoV against a plain-loop GPT-2 whose target linears mix their experts row by row; save and load back.</summary>
public class DenseMixtureTests
{
    static readonly NaiveGpt2Config Gpt2 = LoraTestKit.Gpt2; // E = 16, inner = 64, 2 layers
    const int Experts = 3;

    static (CausalLM Model, Dictionary<string, float[]> Weights) LoadGpt2()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 71 });
        return (ModelLoader.Load(dir), ckpt.Weights.ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    static void Randomize(ITunerModel tuner, int seed)
    {
        using var gen = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (_, p, _) in tuner.AdapterParameters()) p.copy_(rand(p.shape, ScalarType.Float32, generator: gen).mul_(1.2).sub_(0.4));
    }

    /// <summary>Per naive path: the values of each named parameter of the layer.</summary>
    static Dictionary<string, Dictionary<string, float[]>> Values(ITunerModel tuner, string prefix, string marker)
    {
        var result = new Dictionary<string, Dictionary<string, float[]>>();
        foreach (var (name, p, _) in tuner.AdapterParameters())
        {
            int at = name.IndexOf($".{marker}", StringComparison.Ordinal);
            string path = name[prefix.Length..at];
            string field = name[(name.IndexOf('.', at + 1) + 1)..];
            if (!result.TryGetValue(path, out var d)) result[path] = d = new();
            d[field] = LoraTestKit.Values(p);
        }
        return result;
    }

    [Fact]
    public void MoLoraMixesItsLoraExpertsBySoftmaxWeights()
    {
        var (model, weights) = LoadGpt2();
        using var _m = model;
        var molora = MoLoraModel.Create(model, new MoLoraConfig { R = 2, LoraAlpha = 6, NumExperts = Experts, TargetModules = TargetModules.FromNames("c_attn", "c_fc") }, seed: 1);
        Randomize(molora, 2);
        var v = Values(molora, "transformer.", "molora_default");
        Assert.Equal(["h.0.attn.c_attn", "h.0.mlp.c_fc", "h.1.attn.c_attn", "h.1.mlp.c_fc"], v.Keys.Order(StringComparer.Ordinal));
        var stash = new Dictionary<string, double[]>();
        var hooks = new NaiveHooks
        {
            LinearInput = (path, x) => { stash[path] = x; return x; },
            LinearOutput = (path, y) =>
            {
                if (!v.TryGetValue(path, out var p)) return y;
                var x = stash[path];
                var w = NaiveOps.Softmax(MixtureReference.Logits(p["router.weight"], x, Experts));
                var output = (double[])y.Clone();
                for (int e = 0; e < Experts; e++)
                {
                    var d = MixtureReference.LoraDelta(p["experts.lora_A"], p["experts.lora_B"], e, 2, x.Length, y.Length, x, 6.0 / 2);
                    for (int j = 0; j < y.Length; j++) output[j] += w[e] * d[j];
                }
                return output;
            },
        };
        var ids = RandomIds(10, Gpt2.VocabSize, seed: 3);
        var expected = new NaiveGpt2(Gpt2, weights) { Hooks = hooks }.Logits(ids);
        Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4, $"max diff {MaxAbsDiff(expected, Logits(model, ids))}");
        Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, weights).Logits(ids), Logits(model, ids)) > 1e-3);

        // Save and load into a fresh model: the same logits; the file holds the stacked experts.
        var dir = TinyCheckpoints.NewTempDirectory();
        molora.SaveAdapter(dir, "default");
        var keys = NaiveSafetensors.Read(Path.Combine(dir, "adapter_model.safetensors"));
        Assert.Equal([Experts, 2, 16], keys["base_model.model.transformer.h.0.attn.c_attn.molora.lora_A"].Shape);
        Assert.Equal([Experts, 48, 2], keys["base_model.model.transformer.h.0.attn.c_attn.molora.lora_B"].Shape);
        var (other, _) = LoadGpt2();
        using var _o = other;
        PeftModel.Load(other, [dir]);
        Assert.True(MaxAbsDiff(expected, Logits(other, ids)) < 1e-4);
    }

    [Fact]
    public void MoVScalesByTheMergedVectorOfItsExperts()
    {
        var (model, weights) = LoadGpt2();
        using var _m = model;
        var mov = MoVModel.Create(model, new MoVConfig { NumExperts = Experts }, seed: 1); // gpt2 default: c_attn, mlp.c_proj (feed-forward)
        // init_ia3_weights: every vector is ones, so any mixture is the identity.
        var ids = RandomIds(10, Gpt2.VocabSize, seed: 4);
        Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, weights).Logits(ids), Logits(model, ids)) < 1e-4);
        Randomize(mov, 5);
        var v = Values(mov, "transformer.", "mov_default");
        Assert.Equal(["h.0.attn.c_attn", "h.0.mlp.c_proj", "h.1.attn.c_attn", "h.1.mlp.c_proj"], v.Keys.Order(StringComparer.Ordinal));
        double[] Merged(Dictionary<string, float[]> p, double[] x, int d)
        {
            var w = NaiveOps.Softmax(MixtureReference.Logits(p["router.weight"], x, Experts));
            var l = new double[d];
            for (int e = 0; e < Experts; e++)
                for (int j = 0; j < d; j++) l[j] += w[e] * p["ia3_l"][e * d + j];
            return l;
        }
        var stash = new Dictionary<string, double[]>();
        var hooks = new NaiveHooks
        {
            LinearInput = (path, x) =>
            {
                stash[path] = x;
                if (!path.EndsWith("mlp.c_proj", StringComparison.Ordinal) || !v.TryGetValue(path, out var p)) return x;
                var l = Merged(p, x, x.Length);
                return x.Select((xi, j) => xi * l[j]).ToArray();
            },
            LinearOutput = (path, y) =>
            {
                if (path.EndsWith("mlp.c_proj", StringComparison.Ordinal) || !v.TryGetValue(path, out var p)) return y;
                var l = Merged(p, stash[path], y.Length);
                return y.Select((yi, j) => yi * l[j]).ToArray();
            },
        };
        var expected = new NaiveGpt2(Gpt2, weights) { Hooks = hooks }.Logits(ids);
        Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4, $"max diff {MaxAbsDiff(expected, Logits(model, ids))}");
        Assert.Contains("cannot be merged", Assert.Throws<PeftSharpException>(() => mov.Merge()).Message);
    }
}
