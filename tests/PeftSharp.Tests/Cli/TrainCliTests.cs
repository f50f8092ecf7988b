using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using static PeftSharp.Tests.Tuners.LoraTestKit;

namespace PeftSharp.Tests.Cli;

/// <summary><c>peftsharp train</c> end to end on tiny folders; the result is checked with independent code.</summary>
public class TrainCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";

    static string TinyGpt2(out TinyCheckpoint ckpt, NaiveGpt2Config config)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        ckpt = TinyCheckpoints.WriteGpt2(dir, config, new TinyGpt2Options { Seed = 111 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 6)));
        return dir;
    }

    [Fact]
    public void TrainedAdapterIsPeftShapedAndScoresAsAnIndependentImplementationSays()
    {
        var config = new NaiveGpt2Config { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };
        var dir = TinyGpt2(out var ckpt, config);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "adapter");
        var r = CliRunner.Run("train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir, "--steps", "6",
            "--lr", "1e-2", "--batch-size", "2", "--seq-len", "32", "--r", "4", "--alpha", "8", "--val-split", "0.2", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        Assert.Equal(6, json.GetProperty("steps").GetInt32());
        Assert.True(json.GetProperty("train_loss_last").GetDouble() < json.GetProperty("train_loss_first").GetDouble());
        Assert.True(json.GetProperty("eval_loss").GetDouble() > 0);
        Assert.Equal(outDir, json.GetProperty("adapter_dir").GetString());
        Assert.True(File.Exists(Path.Combine(outDir, "metrics.jsonl")));
        Assert.True(new FileInfo(Path.Combine(outDir, "loss.png")).Length > 1000);

        // PEFT's layout, read back by the test's own reader; merged by loops into the reference model.
        var tensors = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal(4, tensors.Count);
        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        Assert.Equal("LORA", cfg.RootElement.GetProperty("peft_type").GetString());
        Assert.True(cfg.RootElement.GetProperty("fan_in_fan_out").GetBoolean());
        double scaling = cfg.RootElement.GetProperty("lora_alpha").GetDouble() / cfg.RootElement.GetProperty("r").GetInt32();
        var merged = Copy(ckpt.Weights);
        for (int layer = 0; layer < 2; layer++)
        {
            var a = tensors[$"base_model.model.transformer.h.{layer}.attn.c_attn.lora_A.weight"];
            var b = tensors[$"base_model.model.transformer.h.{layer}.attn.c_attn.lora_B.weight"];
            Assert.Equal([4, 16], a.Shape);
            Assert.Equal([48, 4], b.Shape);
            AddTo(merged, $"transformer.h.{layer}.attn.c_attn.weight", Delta(a.Values, b.Values, 4, 16, 48, scaling), conv1d: true);
        }
        var textPath = Path.Combine(dir, "score.txt");
        File.WriteAllText(textPath, Text);
        var (_, want) = NaiveScoring.WindowedMeanNll(TinyBpe.ReferenceEncode(Text).ToArray(), config.NPositions, new NaiveGpt2(config, merged).Logits);
        var eval = CliRunner.Run("eval", "--model", dir, "--text", textPath, "--adapter", outDir, "--json");
        Assert.Equal(want, eval.Json().GetProperty("nll").GetDouble(), 1e-4);
    }

    [Fact]
    public void ResumeContinuesWhereACheckpointLeftOff()
    {
        var config = new NaiveGpt2Config { VocabSize = 1003, NEmbd = 16, NLayer = 1, NHead = 2, NPositions = 32 };
        var dir = TinyGpt2(out _, config);
        string[] Args(string outDir) => ["train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir, "--steps", "4",
            "--lr", "1e-2", "--batch-size", "2", "--seq-len", "32", "--save-steps", "2", "--json"];
        var straight = Path.Combine(TinyCheckpoints.NewTempDirectory(), "a");
        Assert.Equal(0, CliRunner.Run(Args(straight)).ExitCode);
        var resumed = Path.Combine(TinyCheckpoints.NewTempDirectory(), "b");
        Assert.Equal(0, CliRunner.Run(Args(resumed)).ExitCode);
        // Pretend the run died after step 2: drop everything written after that checkpoint.
        Directory.Delete(Path.Combine(resumed, "checkpoint-4"), recursive: true);
        File.Delete(Path.Combine(resumed, "adapter_model.safetensors"));
        var again = CliRunner.Run([.. Args(resumed), "--resume"]);
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.Contains("resumed from", again.Stderr);
        var a = NaiveSafetensors.Read(Path.Combine(straight, "adapter_model.safetensors"));
        var b = NaiveSafetensors.Read(Path.Combine(resumed, "adapter_model.safetensors"));
        foreach (var (key, t) in a)
            for (int i = 0; i < t.Values.Length; i++) Assert.Equal(t.Values[i], b[key].Values[i], 5);
        // Without --resume, an existing run is never overwritten.
        CliRunner.AssertUserError(CliRunner.Run(Args(resumed)));
    }

    [Fact]
    public void QLoraTrainingOnA4BitLlamaBaseTrainsOnlyTheAdapter()
    {
        var config = new NaiveLlamaConfig { ModelType = "llama", VocabSize = 1003, HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 1,
                                            NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 64 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 121 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 6)));
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "qlora");
        var r = CliRunner.Run("train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir, "--steps", "4", "--lr", "1e-2",
            "--batch-size", "2", "--seq-len", "32", "--target", "all-linear", "--load-in-4bit", "--double-quant", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.True(r.Json().GetProperty("train_loss_last").GetDouble() < r.Json().GetProperty("train_loss_first").GetDouble());
        // Only adapter factors are saved: 7 linear layers × (A, B); the 4-bit base is never written.
        var tensors = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal(14, tensors.Count);
        Assert.All(tensors.Keys, k => Assert.Matches(@"\.lora_[AB]\.weight$", k));
        Assert.Equal(ckpt.Weights["model.layers.0.self_attn.q_proj.weight"], NaiveSafetensors.Read(ckpt.WeightsPath)["model.layers.0.self_attn.q_proj.weight"].Values);
        // The adapter then scores with the 4-bit base through eval.
        var textPath = Path.Combine(dir, "score.txt");
        File.WriteAllText(textPath, Text);
        var eval = CliRunner.Run("eval", "--model", dir, "--text", textPath, "--adapter", outDir, "--load-in-4bit", "--double-quant", "--json");
        Assert.True(eval.ExitCode == 0, eval.Stderr);
        Assert.True(eval.Json().GetProperty("nll").GetDouble() > 0);
    }
}
