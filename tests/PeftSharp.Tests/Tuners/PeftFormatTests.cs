using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Models.ModelTestKit;

namespace PeftSharp.Tests.Tuners;

/// <summary>Adapters on disk exactly as Python PEFT writes and reads them.</summary>
public class PeftFormatTests
{
    [Fact]
    public void Gpt2AdapterIsSavedWithPeftKeysShapesAndConfig()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, LoraTestKit.Gpt2);
        using var model = ModelLoader.Load(dir);
        var lora = LoraModel.Create(model, new LoraConfig { R = 4, LoraAlpha = 16, LoraDropout = 0.05, TargetModules = TargetModules.FromNames("c_attn") });
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "adapter");
        AdapterFiles.Save(lora, outDir, baseModelNameOrPath: "gpt2");

        var tensors = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal(
            ["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
             "base_model.model.transformer.h.1.attn.c_attn.lora_A.weight", "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"],
            tensors.Keys.Order(StringComparer.Ordinal));
        Assert.Equal([4, 16], tensors["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"].Shape);
        Assert.Equal([48, 4], tensors["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"].Shape);

        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        var root = config.RootElement;
        Assert.Equal("LORA", root.GetProperty("peft_type").GetString());
        Assert.True(root.GetProperty("fan_in_fan_out").GetBoolean());
        Assert.True(root.GetProperty("inference_mode").GetBoolean());
        Assert.Equal("CAUSAL_LM", root.GetProperty("task_type").GetString());
        Assert.Equal("gpt2", root.GetProperty("base_model_name_or_path").GetString());
        Assert.Equal(4, root.GetProperty("r").GetInt32());
        Assert.Equal(16, root.GetProperty("lora_alpha").GetInt32());
        Assert.Equal(["c_attn"], root.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()));
        var keys = root.EnumerateObject().Select(p => p.Name).ToList();
        Assert.Equal(keys.Order(StringComparer.Ordinal), keys); // sort_keys=True
    }

    [Fact]
    public void NamedAdaptersGoToSubfoldersAndRoundTrip()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, LoraTestKit.Llama, new TinyLlamaOptions { Seed = 71 });
        using var model = ModelLoader.Load(dir);
        var config = new LoraConfig { R = 3, LoraAlpha = 5, UseDora = true, InitLoraWeights = InitLoraWeights.False, TargetModules = TargetModules.FromNames("q_proj") };
        var lora = LoraModel.Create(model, config, "style", seed: 9);
        lora.AddAdapter("emb", new LoraConfig { R = 2, InitLoraWeights = InitLoraWeights.False, TargetModules = TargetModules.FromNames("embed_tokens", "v_proj") }, seed: 11);
        lora.SetAdapter("style", "emb");
        var ids = RandomIds(9, LoraTestKit.Llama.VocabSize, 10);
        var want = Logits(model, ids);
        var outDir = TinyCheckpoints.NewTempDirectory();
        var saved = AdapterFiles.Save(lora, outDir, "style");
        var savedEmb = AdapterFiles.Save(lora, outDir, "emb");
        Assert.Equal(Path.Combine(outDir, "style"), saved);
        var tensors = NaiveSafetensors.Read(Path.Combine(saved, "adapter_model.safetensors"));
        Assert.Equal([16], tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"].Shape);
        Assert.Contains("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", tensors.Keys);
        Assert.Equal(6, tensors.Count);
        var emb = NaiveSafetensors.Read(Path.Combine(savedEmb, "adapter_model.safetensors"));
        Assert.Equal([2, 48], emb["base_model.model.model.embed_tokens.lora_embedding_A"].Shape);
        Assert.Equal([16, 2], emb["base_model.model.model.embed_tokens.lora_embedding_B"].Shape);

        using var fresh = ModelLoader.Load(dir);
        var loaded = AdapterFiles.Load(fresh, saved, "style");
        AdapterFiles.LoadAdapter(loaded, savedEmb, "emb");
        loaded.SetAdapter("style", "emb");
        Assert.True(MaxAbsDiff(want, Logits(fresh, ids)) < 1e-5);
        Assert.Empty(loaded.TrainableParameters()); // loaded for inference, as PEFT's from_pretrained
    }

    [Fact]
    public void AdapterForAnotherBaseFailsNamingTensorAndShapes()
    {
        var small = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(small, LoraTestKit.Llama);
        using var m1 = ModelLoader.Load(small);
        var adapter = TinyCheckpoints.NewTempDirectory();
        AdapterFiles.Save(LoraModel.Create(m1, new LoraConfig { R = 2 }), adapter);

        var wide = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(wide, LoraTestKit.Llama with { HiddenSize = 24, NumAttentionHeads = 4, NumKeyValueHeads = 2 });
        using var m2 = ModelLoader.Load(wide);
        var e = Assert.Throws<PeftSharpException>(() => AdapterFiles.Load(m2, adapter));
        Assert.Contains("base_model.model.model.layers.0.self_attn.", e.Message);
        Assert.Contains("[2, 16]", e.Message);
        Assert.Contains("[2, 24]", e.Message);
    }

    [Fact]
    public void ConfigFieldsFromNewerPeftVersionsAreAccepted()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, LoraTestKit.Gpt2);
        using var model = ModelLoader.Load(dir);
        var adapter = TinyCheckpoints.NewTempDirectory();
        AdapterFiles.Save(LoraModel.Create(model, new LoraConfig()), adapter);
        var path = Path.Combine(adapter, "adapter_config.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"bias\": \"none\",", "\"bias\": \"none\",\n  \"some_field_from_2027\": {\"x\": [1, 2]},"));
        using var fresh = ModelLoader.Load(dir);
        var lora = AdapterFiles.Load(fresh, adapter);
        Assert.Equal(2, lora.LinearLayers.Count);
    }
}
