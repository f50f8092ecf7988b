using PeftSharp.Models;
using PeftSharp.Models.Layers;
using PeftSharp.Peft;
using PeftSharp.Tests.Models;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.AdaLora;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>The tuner registry, PeftModel's dispatch on peft_type, and several tuners on one layer.</summary>
public class TunerRegistryTests
{
    static CausalLM TinyGpt2(out Dictionary<string, float[]> weights)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        weights = TinyCheckpoints.WriteGpt2(dir, LoraTestKit.Gpt2, new TinyGpt2Options { Seed = 41 }).Weights.ToDictionary(kv => kv.Key, kv => kv.Value);
        return ModelLoader.Load(dir);
    }

    static void WriteConfig(string dir, string json)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, PeftConfig.ConfigFileName), json);
    }

    [Fact]
    public void RegistryFindsTheLibrarysTunersByPeftType()
    {
        Assert.IsType<LoraTuner>(TunerRegistry.Find("LORA"));
        Assert.IsType<AdaLoraTuner>(TunerRegistry.Find("ADALORA"));
        Assert.Null(TunerRegistry.Find("NOPE"));
    }

    [Fact]
    public void UnknownPeftTypeNamesTheFileAndListsTheKnownOnes()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        WriteConfig(dir, """{"peft_type": "SUPER_LORA"}""");
        var e = Assert.Throws<PeftSharpException>(() => TunerRegistry.ForFolder(dir));
        Assert.Contains(Path.Combine(dir, "adapter_config.json"), e.Message);
        Assert.Contains("unknown peft_type \"SUPER_LORA\"", e.Message);
        Assert.Contains("LORA", e.Message);
        Assert.Contains("ADALORA", e.Message);

        WriteConfig(dir, """{"peft_type": "LOHA"}""");
        e = Assert.Throws<PeftSharpException>(() => TunerRegistry.ForFolder(dir));
        Assert.Contains("\"LOHA\" is a PEFT method PeftSharp does not implement", e.Message);
    }

    [Fact]
    public void PeftModelLoadsEachFolderWithItsOwnTuner()
    {
        using var model = TinyGpt2(out _);
        var root = TinyCheckpoints.NewTempDirectory();
        // Write one LoRA and one AdaLoRA adapter with the tuners themselves, then load both through PeftModel.
        using (var source = TinyGpt2(out _))
        {
            var peft = new PeftModel(source);
            peft.AddAdapter("default", new LoraConfig { R = 2, TargetModules = TargetModules.FromNames("c_fc"), InitLoraWeights = InitLoraWeights.False }, seed: 1);
            peft.Save(Path.Combine(root, "lora"));
            peft.AddAdapter("ada", new AdaLoraConfig { InitR = 3, TargetR = 2, TotalStep = 10, TargetModules = TargetModules.FromNames("c_attn") }, seed: 2);
            peft.Save(Path.Combine(root, "ada"), "ada");
        }
        var loaded = PeftModel.Load(model, [Path.Combine(root, "lora"), Path.Combine(root, "ada", "ada")], ["default", "ada"]);
        Assert.Equal(["default", "ada"], loaded.ActiveAdapters);
        Assert.IsType<LoraModel>(loaded.TunerOf("default"));
        Assert.IsType<AdaLoraModel>(loaded.TunerOf("ada"));
        Assert.Equal(2, loaded.Tuners.Count);
        Assert.Empty(loaded.TrainableParameters());
        var e = Assert.Throws<PeftSharpException>(() => loaded.LoadAdapter(Path.Combine(root, "lora"), "ada"));
        Assert.Contains("already exists", e.Message);
    }

    sealed class Affine(TunableLayer host, double scale, double shift) : ILayerTuner
    {
        public Tensor Forward(Tensor input) => host.BaseForward(input).mul(scale).add(shift);
    }

    [Fact]
    public void TunersOnOneLayerNestInTheOrderTheyWereAttached()
    {
        using var model = TinyGpt2(out _);
        var layer = ((Gpt2LMHeadModel)model).transformer.h[0].mlp.c_fc;
        using var x = randn(3, LoraTestKit.Gpt2.NEmbd);
        using var plain = layer.forward(x);
        var inner = new Affine(layer, 2.0, 0.0);
        var outer = new Affine(layer, 1.0, 0.5);
        layer.AddTuner(inner);
        layer.AddTuner(outer);
        using var both = layer.forward(x);
        Assert.True(both.allclose(plain.mul(2).add(0.5), 1e-6, 1e-6)); // outer(inner(base))
        Assert.True(layer.BaseForward(x).allclose(plain)); // outside a tuner: the layer itself
        layer.RemoveTuner(outer);
        using var one = layer.forward(x);
        Assert.True(one.allclose(plain.mul(2)));
        layer.RemoveTuner(inner);
        Assert.Null(layer.Tuner);
    }
}
