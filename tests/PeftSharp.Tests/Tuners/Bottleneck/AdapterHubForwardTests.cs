using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.Bottleneck;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.Bottleneck;

/// <summary>Houlsby, Pfeiffer and parallel adapters in whole models, through the sub-layer hooks, against plain loops.</summary>
public class AdapterHubForwardTests
{
    static void Randomize(AdapterHubModel hub, string name, int seed)
    {
        var gen = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (_, p) in hub.ParametersOf(name)) p.normal_(0, 0.3, gen);
    }

    static NaiveHubAdapter Naive(SubLayerBottleneck a, string kind, double scaling, string act)
    {
        var p = a.named_parameters().ToDictionary(x => x.name, x => Values(x.parameter));
        return new NaiveHubAdapter(kind, p["adapter_down.0.weight"], p["adapter_down.0.bias"], p["adapter_up.weight"], p["adapter_up.bias"], a.BottleneckSize, scaling, act);
    }

    [Theory]
    [InlineData("houlsby")]
    [InlineData("pfeiffer")]
    [InlineData("parallel")]
    public void Gpt2PresetsMatchPlainLoops(string preset)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 31 });
        using var model = ModelLoader.Load(dir);
        var config = preset switch { "houlsby" => AdapterHubConfig.Houlsby(8), "pfeiffer" => AdapterHubConfig.Pfeiffer(8), _ => AdapterHubConfig.Parallel(4) };
        var hub = AdapterHubModel.Create(model, config, "task", seed: 1);
        var ids = RandomIds(11, Gpt2.VocabSize, 5);
        var baseLogits = new NaiveGpt2(Gpt2, ckpt.Weights).Logits(ids);
        if (preset == "parallel") Assert.True(MaxAbsDiff(baseLogits, Logits(model, ids)) < 1e-5); // mam_adapter: zero up-projection

        Randomize(hub, "task", 2);
        var naive = new NaiveAdaptedGpt2(Gpt2, ckpt.Weights);
        double s = preset == "parallel" ? 4.0 : 1.0;
        string act = preset == "houlsby" ? "swish" : "relu";
        foreach (var ((layer, kind), loc) in hub.Locations)
            naive.SubLayer[$"{layer}.{(kind == SubLayerKind.Attention ? "attn" : "mlp")}"] = Naive(loc.adapters["task"], preset, s, act);
        Assert.Equal(preset == "houlsby" ? 2 * Gpt2.NLayer : Gpt2.NLayer, hub.Locations.Count);
        var want = naive.Logits(ids);
        Assert.True(MaxAbsDiff(want, baseLogits) > 1e-3);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        using (hub.Disable()) Assert.True(MaxAbsDiff(baseLogits, Logits(model, ids)) < 1e-4);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        hub.Unload();
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains("adapters"));
        Assert.True(MaxAbsDiff(baseLogits, Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void LlamaHoulsbyMatchesTheNaiveHooks()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 32 });
        using var model = ModelLoader.Load(dir);
        var hub = AdapterHubModel.Create(model, AdapterHubConfig.Houlsby(4), "h", seed: 3);
        Randomize(hub, "h", 4);
        var adapters = hub.Locations.ToDictionary(kv => (kv.Key.Layer, kv.Key.Location == SubLayerKind.Attention ? "attention" : "mlp"), kv => Naive(kv.Value.adapters["h"], "houlsby", 1.0, "swish"));
        Assert.All(model.named_parameters().Where(p => p.parameter.requires_grad), p => Assert.Contains(".adapters.h.", p.name));
        double[] Sub(int layer, string kind, double[] residual, double[] input, double[] output)
        {
            var a = adapters[(layer, kind)];
            var hidden = new double[a.D];
            for (int r = 0; r < a.D; r++)
            {
                double sum = a.DownB[r];
                for (int k = 0; k < output.Length; k++) sum += a.DownW[r * output.Length + k] * output[k];
                hidden[r] = NaiveAdaptedGpt2.Act("swish", sum);
            }
            var result = new double[output.Length];
            for (int j = 0; j < output.Length; j++)
            {
                double sum = a.UpB[j];
                for (int r = 0; r < a.D; r++) sum += a.UpW[j * a.D + r] * hidden[r];
                result[j] = output[j] + sum; // the block adds the residual: h + o + f(o)
            }
            return result;
        }
        var naive = new NaiveLlama(Llama, ckpt.Weights) { Hooks = new NaiveHooks { SubLayer = Sub } };
        var ids = RandomIds(10, Llama.VocabSize, 6);
        Assert.True(MaxAbsDiff(naive.Logits(ids), Logits(model, ids)) < 1e-4);
        // Parameters by formula: per location (H·d + d) + (d·H + H), d = 16 // 4, two locations per layer.
        int h = Llama.HiddenSize, d = 4;
        Assert.Equal(Llama.NumHiddenLayers * 2L * (h * d + d + d * h + h), hub.ParameterCount("h"));
    }

    [Fact]
    public void HandWrittenAdapterHubFolderScoresAsThePlainLoops()
    {
        using var tmp = new TempDir();
        var ckpt = TinyCheckpoints.WriteGpt2(tmp.File("base"), Gpt2, new TinyGpt2Options { Seed = 33 });
        var naive = new NaiveAdaptedGpt2(Gpt2, ckpt.Weights);
        string folder = BottleneckFormatTests.WriteAdapterHubFolder(tmp.File("hub"), "shakespeare", naive);
        using var model = ModelLoader.Load(ckpt.Directory);
        AdapterHubFiles.Load(model, folder);
        var ids = RandomIds(12, Gpt2.VocabSize, 7);
        Assert.True(MaxAbsDiff(naive.Logits(ids), Logits(model, ids)) < 1e-4);
    }
}
