using PeftSharp.Composition;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Tuners.LoraTestKit;

namespace PeftSharp.Tests.Composition;

/// <summary>LoraHub's element-wise composition against loops, and its search on an objective whose minimum is known.</summary>
public class LoraHubTests
{
    static LoraModel Three(out CausalLM model)
    {
        var config = ModelConfig.FromJson("""{"model_type":"llama","vocab_size":12,"hidden_size":12,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2}""");
        model = ModelLoader.Create(config);
        model.InitializeWeights(1);
        var lora = LoraModel.Create(model, new LoraConfig { R = 2, LoraAlpha = 4, InitLoraWeights = InitLoraWeights.False }, "m0", seed: 2);
        lora.AddAdapter("m1", new LoraConfig { R = 2, LoraAlpha = 4, InitLoraWeights = InitLoraWeights.False }, seed: 3);
        lora.AddAdapter("m2", new LoraConfig { R = 2, LoraAlpha = 4, InitLoraWeights = InitLoraWeights.False }, seed: 4);
        return lora;
    }

    [Fact]
    public void ComposeIsTheWeightedSumOfBothFactors()
    {
        var lora = Three(out var model);
        using var _ = model;
        LoraHub.AddComposed(lora, ["m0", "m1", "m2"], "hub");
        LoraHub.Compose(lora, ["m0", "m1", "m2"], [0.5, -1.0, 0.25], "hub");
        foreach (var layer in lora.LinearLayers.Values)
            foreach (var factor in new Func<string, float[]>[] { n => Values(layer.A(n).weight), n => Values(layer.B(n).weight) })
            {
                var f0 = factor("m0"); var f1 = factor("m1"); var f2 = factor("m2"); var hub = factor("hub");
                for (int i = 0; i < hub.Length; i++) Assert.Equal(0.5 * f0[i] - 1.0 * f1[i] + 0.25 * f2[i], hub[i], 5);
            }
    }

    [Fact]
    public void SearchRecoversTheWeightsOfAKnownComposition()
    {
        var lora = Three(out var model);
        using var _ = model;
        string[] modules = ["m0", "m1", "m2"];
        double[] truth = [0.8, -0.5, 0.3];
        // The target: the composition at the true weights; the objective: squared distance of both factors to it.
        LoraHub.AddComposed(lora, modules, "target");
        LoraHub.Compose(lora, modules, truth, "target");
        LoraHub.AddComposed(lora, modules, "hub");
        var layers = lora.LinearLayers.Values.Where(l => l.Adapters.ContainsKey("hub")).ToList();
        double Distance()
        {
            double d = 0;
            foreach (var l in layers)
            {
                var a = Values(l.A("hub").weight); var ta = Values(l.A("target").weight);
                var b = Values(l.B("hub").weight); var tb = Values(l.B("target").weight);
                for (int i = 0; i < a.Length; i++) d += (a[i] - ta[i]) * (a[i] - ta[i]);
                for (int i = 0; i < b.Length; i++) d += (b[i] - tb[i]) * (b[i] - tb[i]);
            }
            return d;
        }
        LoraHub.Compose(lora, modules, [0, 0, 0], "hub");
        double start = Distance();
        var result = LoraHub.Search(lora, modules, "hub", Distance, new LoraHub.Options { Budget = 300, L1 = 0, Seed = 5 });
        Assert.True(result.Loss < 1e-6 * start, $"distance {result.Loss} from {start}");
        for (int i = 0; i < 3; i++) Assert.Equal(truth[i], result.Weights[i], 2);
        Assert.Equal(start, result.History[0], 6); // the search starts at w = 0
    }

    [Fact]
    public void ModulesOfDifferentRankAreRefused()
    {
        var lora = Three(out var model);
        using var _ = model;
        lora.AddAdapter("r4", new LoraConfig { R = 4, LoraAlpha = 4 }, seed: 6);
        Assert.Contains("r=4", Assert.Throws<PeftSharpException>(() => LoraHub.AddComposed(lora, ["m0", "r4"], "hub")).Message);
    }
}
