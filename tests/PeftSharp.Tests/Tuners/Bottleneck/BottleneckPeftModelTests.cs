using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Tuners.LoraTestKit;

namespace PeftSharp.Tests.Tuners.Bottleneck;

/// <summary>Bottleneck adapters through the tuner framework: registry dispatch, refusal to merge, and a LoRA + Houlsby hybrid.</summary>
public class BottleneckPeftModelTests
{
    [Fact]
    public void RegistryDispatchesBothFormatsAndMergeIsRefused()
    {
        using var tmp = new TempDir();
        var ckpt = TinyCheckpoints.WriteGpt2(tmp.File("base"), Gpt2, new TinyGpt2Options { Seed = 41 });
        var naive = new NaiveAdaptedGpt2(Gpt2, ckpt.Weights);
        string llm = BottleneckFormatTests.WriteLlmAdaptersFolder(tmp.File("llm"), naive);
        string hub = BottleneckFormatTests.WriteAdapterHubFolder(tmp.File("hub"), "shakespeare", naive);
        Assert.IsType<BottleneckTuner>(TunerRegistry.ForFolder(llm));
        Assert.IsType<AdapterHubTuner>(TunerRegistry.ForFolder(hub));

        using var model = ModelLoader.Load(ckpt.Directory);
        // Both at once: LLM-Adapters on the MLP's Linear layers and Houlsby after each sub-layer, as the naive model has them.
        var peft = PeftModel.Load(model, [llm, hub], ["llm", "hub"]);
        var ids = RandomIds(10, Gpt2.VocabSize, 3);
        Assert.True(MaxAbsDiff(naive.Logits(ids), Logits(model, ids)) < 1e-4);
        Assert.Equal(BottleneckTuner.CannotMerge, peft.MergeUnsupported());
        var ex = Assert.Throws<PeftSharpException>(() => peft.Merge());
        Assert.Contains("bottleneck adapters cannot be merged", ex.Message);
        using (peft.DisableAdapters())
            Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, ckpt.Weights).Logits(ids), Logits(model, ids)) < 1e-4);
        peft.Unload();
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains("adapter"));
        Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, ckpt.Weights).Logits(ids), Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void LoraOnAttentionPlusHoulsbyAdapterMatchesThePlainLoops()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 42 });
        using var model = ModelLoader.Load(dir);
        var peft = new PeftModel(model);
        // The adapter first, then LoRA on all linear layers: LoRA must not wrap the adapter's own projections.
        peft.AddAdapter("houlsby", new AdapterHubPeftConfig { Hub = AdapterHubConfig.Houlsby(8) }, seed: 2);
        peft.AddAdapter("lora", new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = TargetModules.AllLinear, InitLoraWeights = InitLoraWeights.False }, seed: 1);
        peft.SetAdapter("lora", "houlsby");
        // Only the adapters train, and LoRA wrapped the four base layers of each block only.
        Assert.All(peft.TrainableParameters(), p => Assert.True(p.Name.Contains("lora_") || p.Name.Contains(".adapters.houlsby."), p.Name));
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains("adapters.houlsby") && p.name.Contains("lora_"));

        var weights = Copy(ckpt.Weights);
        var lora = peft.Get<LoraModel>()!;
        Assert.Equal(4 * Gpt2.NLayer, lora.LinearLayers.Count);
        foreach (var (path, layer) in lora.LinearLayers)
            AddTo(weights, path + ".weight", Delta(Values(layer.A("lora").weight), Values(layer.B("lora").weight), 2,
                (int)layer.Host.InFeatures, (int)layer.Host.OutFeatures, 2.0), conv1d: true);
        var naive = new NaiveAdaptedGpt2(Gpt2, weights);
        var hub = peft.Get<AdapterHubModel>()!;
        foreach (var ((layer, kind), loc) in hub.Locations)
        {
            var p = loc.adapters["houlsby"].named_parameters().ToDictionary(x => x.name, x => Values(x.parameter));
            naive.SubLayer[$"{layer}.{(kind == SubLayerKind.Attention ? "attn" : "mlp")}"] =
                new NaiveHubAdapter("houlsby", p["adapter_down.0.weight"], p["adapter_down.0.bias"], p["adapter_up.weight"], p["adapter_up.bias"], 2, 1.0, "swish");
        }
        var ids = RandomIds(9, Gpt2.VocabSize, 4);
        Assert.True(MaxAbsDiff(naive.Logits(ids), Logits(model, ids)) < 1e-4);
    }
}
