using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

public class ModelLoadingTests
{
    static long CountParameters(CausalLM model) => model.parameters().Sum(p => p.numel());

    static ModelConfig Config(string json) => ModelConfig.FromJson(json);

    [Fact]
    public void Gpt2SmallHasItsPublishedParameterCount()
    {
        var config = Config("""{"model_type":"gpt2","vocab_size":50257,"n_embd":768,"n_layer":12,"n_head":12,"n_positions":1024}""");
        using var model = ModelLoader.CreateMeta(config);
        Assert.Equal(124_439_808, CountParameters(model)); // GPT-2 124M, lm_head tied to wte
    }

    [Fact]
    public void SevenBillionConfigsBuildOnTheMetaDeviceWithoutMemory()
    {
        // Llama 2 7B: 6,738,415,616 parameters (published); Mistral 7B v0.1: 7,241,732,096.
        var llama2 = Config("""{"model_type":"llama","vocab_size":32000,"hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"max_position_embeddings":4096,"tie_word_embeddings":false}""");
        var mistral = Config("""{"model_type":"mistral","vocab_size":32000,"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"max_position_embeddings":32768,"sliding_window":4096,"tie_word_embeddings":false}""");
        using (var m = ModelLoader.CreateMeta(llama2, ScalarType.BFloat16))
        {
            Assert.Equal(6_738_415_616, CountParameters(m));
            Assert.All(m.parameters(), p => Assert.Equal(TorchSharp.DeviceType.META, p.device_type));
        }
        using (var m = ModelLoader.CreateMeta(mistral, ScalarType.BFloat16))
            Assert.Equal(7_241_732_096, CountParameters(m));
    }

    [Fact]
    public void Qwen2HasQkvBiasesAndTiedHead()
    {
        // Qwen2-0.5B: 494,032,768 parameters (published), embeddings tied, q/k/v biases, no o_proj bias.
        var qwen = Config("""{"model_type":"qwen2","vocab_size":151936,"hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"max_position_embeddings":32768,"tie_word_embeddings":true}""");
        using var m = ModelLoader.CreateMeta(qwen);
        Assert.Equal(494_032_768, CountParameters(m));
        var names = m.named_parameters().Select(p => p.name).ToHashSet();
        Assert.Contains("model.layers.0.self_attn.q_proj.bias", names);
        Assert.DoesNotContain("model.layers.0.self_attn.o_proj.bias", names);
        Assert.DoesNotContain("lm_head.weight", names);
    }

    [Fact]
    public void UnknownModelTypeIsOneLineNamingIt()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"model_type":"bert","vocab_size":10}""");
        var e = Assert.Throws<PeftSharpException>(() => ModelLoader.Load(dir));
        Assert.Contains("config.json", e.Message);
        Assert.Contains("\"bert\"", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void MissingWeightsNameTheFilesLookedFor()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        File.WriteAllText(Path.Combine(dir, "config.json"), TinyCheckpoints.Gpt2ConfigJson(new NaiveGpt2Config()));
        var e = Assert.Throws<PeftSharpException>(() => ModelLoader.Load(dir));
        Assert.Contains("model.safetensors", e.Message);
    }

    [Fact]
    public void WrongShapeNamesTheTensorAndBothShapes()
    {
        var config = new NaiveGpt2Config { VocabSize = 32, NEmbd = 8, NLayer = 1, NHead = 2, NPositions = 16 };
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, config);
        // Same weights, but a config that promises a wider model.
        File.WriteAllText(Path.Combine(dir, "config.json"), TinyCheckpoints.Gpt2ConfigJson(config with { NPositions = 20 }));
        var e = Assert.Throws<PeftSharpException>(() => ModelLoader.Load(dir));
        Assert.Contains("wpe.weight", e.Message);
        Assert.Contains("[16, 8]", e.Message);
        Assert.Contains("[20, 8]", e.Message);
    }

    [Fact]
    public void IntegerWeightIsRejectedNamingDType()
    {
        var config = new NaiveGpt2Config { VocabSize = 32, NEmbd = 8, NLayer = 1, NHead = 2, NPositions = 16 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, config);
        using (var tensors = PeftSharp.Tensors.SafetensorsCheckpoint.Open(dir))
        {
            var all = tensors.Tensors.Keys.ToDictionary(k => k, k => tensors.Read(k));
            all["transformer.ln_f.bias"] = zeros([8], ScalarType.Int32);
            File.Delete(ckpt.WeightsPath);
            PeftSharp.Tensors.SafetensorsWriter.Save(ckpt.WeightsPath, all);
        }
        var e = Assert.Throws<PeftSharpException>(() => ModelLoader.Load(dir));
        Assert.Contains("transformer.ln_f.bias", e.Message);
        Assert.Contains("I32", e.Message);
    }

    [Fact]
    public void MissingAndUnexpectedTensorsAreNamed()
    {
        var config = new NaiveGpt2Config { VocabSize = 32, NEmbd = 8, NLayer = 1, NHead = 2, NPositions = 16 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, config);
        var weights = new Dictionary<string, Tensor>();
        using (var tensors = PeftSharp.Tensors.SafetensorsCheckpoint.Open(dir))
            foreach (var k in tensors.Tensors.Keys) weights[k] = tensors.Read(k);
        weights.Remove("transformer.h.0.mlp.c_fc.bias");
        PeftSharp.Tensors.SafetensorsWriter.Save(ckpt.WeightsPath, weights);
        var e = Assert.Throws<PeftSharpException>(() => ModelLoader.Load(dir));
        Assert.Contains("missing tensor 'transformer.h.0.mlp.c_fc.bias'", e.Message);

        weights["transformer.h.0.mlp.c_fc.bias"] = zeros([32]);
        weights["transformer.h.0.extra.weight"] = zeros([2]);
        PeftSharp.Tensors.SafetensorsWriter.Save(ckpt.WeightsPath, weights);
        e = Assert.Throws<PeftSharpException>(() => ModelLoader.Load(dir));
        Assert.Contains("unexpected tensor 'transformer.h.0.extra.weight'", e.Message);
    }

    [Fact]
    public void TruncatedCheckpointIsRejectedNamingTheFile()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, new NaiveGpt2Config());
        var bytes = File.ReadAllBytes(ckpt.WeightsPath);
        File.WriteAllBytes(ckpt.WeightsPath, bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<PeftSharpException>(() => ModelLoader.Load(dir));
        Assert.Contains("model.safetensors", e.Message);
    }
}
