using System.Text.Json;
using PeftSharp.Tests.Composition;
using PeftSharp.Tests.Reference;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// <c>peftsharp combine</c> on two PEFT LoRA folders written by the test's own safetensors writer: the written
/// factors equal TIES computed by plain loops on the source factors, the config is PEFT's (r = lora_alpha = source r),
/// and bad input is a one-line error with exit code 1.
/// </summary>
public class CombineCliTests
{
    static string Config(int r, int alpha) =>
        $$"""{"peft_type": "LORA", "r": {{r}}, "lora_alpha": {{alpha}}, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny"}""";

    static (string Dir, Dictionary<string, float[]> Tensors) Adapter(Random rng, int r, int alpha)
    {
        var dir = TinyCheckpoints.NewTempDirectory("peftsharp-adapter-");
        var tensors = new Dictionary<string, float[]>();
        var list = new List<NaiveTensor>();
        for (int layer = 0; layer < 2; layer++)
            foreach (var (proj, outDim) in new[] { ("q_proj", 16), ("v_proj", 8) })
            {
                string key = $"base_model.model.model.layers.{layer}.self_attn.{proj}";
                var a = Enumerable.Range(0, r * 16).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                var b = Enumerable.Range(0, outDim * r).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                tensors[key + ".lora_A.weight"] = a;
                tensors[key + ".lora_B.weight"] = b;
                list.Add(new NaiveTensor(key + ".lora_A.weight", NaiveDType.F32, [r, 16], a));
                list.Add(new NaiveTensor(key + ".lora_B.weight", NaiveDType.F32, [outDim, r], b));
            }
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), list);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), Config(r, alpha));
        return (dir, tensors);
    }

    static string Model()
    {
        var config = new NaiveLlamaConfig { ModelType = "llama", VocabSize = 40, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2,
                                            NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 40 };
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 5 });
        return dir;
    }

    [Fact]
    public void TiesWritesThePeftFolderTheLoopsPredict()
    {
        var rng = new Random(21);
        var (x, tx) = Adapter(rng, 4, 8);   // scaling 2
        var (y, ty) = Adapter(rng, 4, 2);   // scaling 0.5
        var model = Model();
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "combined");
        var r = CliRunner.Run("combine", "--model", model, "--adapter", x, "--adapter", y, "--weights", "0.5,-2",
                              "--combination-type", "ties", "--density", "0.5", "--majority-sign-method", "frequency", "--out", outDir, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(4, r.Json().GetProperty("r").GetInt32());
        Assert.Equal(4, r.Json().GetProperty("layers").GetInt32());

        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        Assert.Equal(4, config.RootElement.GetProperty("r").GetInt32());
        Assert.Equal(4, config.RootElement.GetProperty("lora_alpha").GetDouble());
        Assert.Equal("LORA", config.RootElement.GetProperty("peft_type").GetString());

        var written = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal(tx.Keys.Order(), written.Keys.Order());
        // w·s = 0.5·2 = 1 and -2·0.5 = -1: A gets weights +1, -1 (sign on A), B gets 1, 1.
        foreach (var key in tx.Keys)
        {
            bool isA = key.EndsWith("lora_A.weight");
            double[] w = isA ? [1.0, -1.0] : [1.0, 1.0];
            var want = NaiveTaskMerging.Ties([tx[key].Select(v => (double)v).ToArray(), ty[key].Select(v => (double)v).ToArray()], w, 0.5, frequency: true);
            var got = written[key].Values;
            for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(want[i] - got[i]) < 1e-5, $"{key}[{i}]: {want[i]} vs {got[i]}");
        }
    }

    [Theory]
    [InlineData("0.5", "ties", "0.5", "weight")]                 // one weight for two adapters
    [InlineData("0.5,0.5", "ties", "1.5", "--density")]          // density outside (0, 1]
    [InlineData("0.5,0.5", "linear", null, "same r")]             // ranks differ
    [InlineData("0.5,0.5", "median", null, "--combination-type")] // unknown type
    [InlineData("0.5,abc", "svd", null, "--weights")]            // not a number
    public void BadInputIsOneLine(string weights, string type, string? density, string expected)
    {
        var rng = new Random(22);
        var (x, _) = Adapter(rng, 4, 8);
        var (y, _) = Adapter(rng, 2, 2);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "combined");
        string[] args = ["combine", "--model", Model(), "--adapter", x, "--adapter", y, "--weights", weights, "--combination-type", type, "--out", outDir];
        if (density is not null) args = [.. args, "--density", density];
        var r = CliRunner.Run(args);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(expected, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.False(Directory.Exists(outDir));
    }
}
