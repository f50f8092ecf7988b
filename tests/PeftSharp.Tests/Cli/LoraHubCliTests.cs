using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// <c>peftsharp lorahub</c> end to end on a tiny Llama folder and two hand-written PEFT LoRA modules: the written
/// adapter's factors are Σ wᵢ·(factor of module i) with the reported weights, and the search never ends above the
/// objective at w = 0 (the base model's loss).
/// </summary>
public class LoraHubCliTests
{
    [Fact]
    public void WritesTheComposedAdapterAndItsWeights()
    {
        var config = new NaiveLlamaConfig { ModelType = "llama", VocabSize = 1003, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2,
                                            NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 64 };
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 41 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        var rng = new Random(42);
        var modules = new List<Dictionary<string, float[]>>();
        var moduleDirs = new List<string>();
        for (int m = 0; m < 2; m++)
        {
            var adapter = TinyCheckpoints.NewTempDirectory("peftsharp-adapter-");
            var tensors = new Dictionary<string, float[]>();
            var list = new List<NaiveTensor>();
            for (int layer = 0; layer < 2; layer++)
            {
                string key = $"base_model.model.model.layers.{layer}.self_attn.q_proj";
                var a = Enumerable.Range(0, 4 * 16).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
                var b = Enumerable.Range(0, 16 * 4).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
                tensors[key + ".lora_A.weight"] = a;
                tensors[key + ".lora_B.weight"] = b;
                list.Add(new NaiveTensor(key + ".lora_A.weight", NaiveDType.F32, [4, 16], a));
                list.Add(new NaiveTensor(key + ".lora_B.weight", NaiveDType.F32, [16, 4], b));
            }
            NaiveSafetensors.Write(Path.Combine(adapter, "adapter_model.safetensors"), list);
            File.WriteAllText(Path.Combine(adapter, "adapter_config.json"), """{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}""");
            modules.Add(tensors);
            moduleDirs.Add(adapter);
        }
        var data = Path.Combine(TinyCheckpoints.NewTempDirectory(), "few.txt");
        File.WriteAllText(data, string.Concat(Enumerable.Repeat("Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo?\n", 4)));
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "hub");

        var r = CliRunner.Run("lorahub", "--model", dir, "--adapter", moduleDirs[0], "--adapter", moduleDirs[1], "--data", data,
                              "--budget", "10", "--max-length", "32", "--seed", "3", "--out", outDir, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        var weights = json.GetProperty("weights").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        Assert.Equal(2, weights.Length);
        Assert.All(weights, w => Assert.InRange(w, -1.5, 1.5));
        Assert.True(json.GetProperty("objective").GetDouble() <= json.GetProperty("base_loss").GetDouble() + 1e-9);
        Assert.Equal(10, json.GetProperty("evaluations").GetInt32());

        var written = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal(modules[0].Keys.Order(), written.Keys.Order());
        foreach (var key in modules[0].Keys)
            for (int i = 0; i < modules[0][key].Length; i++)
                Assert.Equal(weights[0] * modules[0][key][i] + weights[1] * modules[1][key][i], written[key].Values[i], 4);
        using var record = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "lorahub.json")));
        Assert.Equal(2, record.RootElement.GetProperty("modules").GetArrayLength());
    }
}
