using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using static PeftSharp.Tests.Tuners.LoraTestKit;

namespace PeftSharp.Tests.Cli;

/// <summary><c>train --method adalora</c>, then <c>eval</c> / <c>merge</c> with the folder, checked with independent code.</summary>
public class AdaLoraCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };

    static string TinyGpt2(out TinyCheckpoint ckpt)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        ckpt = TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 112 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 6)));
        return dir;
    }

    static string[] TrainArgs(string dir, string outDir) =>
        ["train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir, "--method", "adalora", "--steps", "6",
         "--lr", "1e-2", "--batch-size", "2", "--seq-len", "32", "--alpha", "8", "--init-r", "4", "--target-r", "2", "--tinit", "1",
         "--tfinal", "2", "--orth-reg-weight", "0.3", "--json"];

    [Fact]
    public void TrainedAdaLoraAdapterIsPeftShapedAndEvalAndMergeUseItAsLoopsSay()
    {
        var dir = TinyGpt2(out var ckpt);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "adapter");
        var r = CliRunner.Run(TrainArgs(dir, outDir));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("AdaLoRA ranks kept", r.Stderr);

        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        var root = cfg.RootElement;
        Assert.Equal("ADALORA", root.GetProperty("peft_type").GetString());
        Assert.Equal(6, root.GetProperty("total_step").GetInt32());
        Assert.Equal(0.3, root.GetProperty("orth_reg_weight").GetDouble());
        var pattern = root.GetProperty("rank_pattern").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(b => b.GetBoolean()).ToArray());
        Assert.Equal(["transformer.h.0.attn.c_attn.lora_E", "transformer.h.1.attn.c_attn.lora_E"], pattern.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(2 * 2, pattern.Values.Sum(v => v.Count(k => k)));   // target_r × layers

        // ΔW = B·diag(E)·A · α/(init_r + 1e-5) by loops, from the file as the test's own reader sees it.
        var tensors = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal(6, tensors.Count);
        var merged = Copy(ckpt.Weights);
        for (int layer = 0; layer < 2; layer++)
        {
            string prefix = $"base_model.model.transformer.h.{layer}.attn.c_attn.";
            var a = tensors[prefix + "lora_A"];
            var e = tensors[prefix + "lora_E"];
            var b = tensors[prefix + "lora_B"];
            int k = pattern[$"transformer.h.{layer}.attn.c_attn.lora_E"].Count(x => x);
            Assert.Equal([k, 16], a.Shape);
            Assert.Equal([k, 1], e.Shape);
            Assert.Equal([48, k], b.Shape);
            var scaledA = (float[])a.Values.Clone();
            for (int j = 0; j < k; j++) for (int i = 0; i < 16; i++) scaledA[j * 16 + i] *= e.Values[j];
            AddTo(merged, $"transformer.h.{layer}.attn.c_attn.weight", Delta(scaledA, b.Values, k, 16, 48, 8.0 / (4 + 1e-5)), conv1d: true);
        }
        var textPath = Path.Combine(dir, "score.txt");
        File.WriteAllText(textPath, Text);
        var (_, want) = NaiveScoring.WindowedMeanNll(TinyBpe.ReferenceEncode(Text).ToArray(), Config.NPositions, new NaiveGpt2(Config, merged).Logits);
        var eval = CliRunner.Run("eval", "--model", dir, "--text", textPath, "--adapter", outDir, "--json");
        Assert.True(eval.ExitCode == 0, eval.Stderr);
        Assert.Equal(want, eval.Json().GetProperty("nll").GetDouble(), 1e-4);

        var mergedDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "merged");
        var merge = CliRunner.Run("merge", "--model", dir, "--adapter", outDir, "--out", mergedDir);
        Assert.True(merge.ExitCode == 0, merge.Stderr);
        File.Copy(Path.Combine(dir, "tokenizer.json"), Path.Combine(mergedDir, "tokenizer.json"), overwrite: true);
        var evalMerged = CliRunner.Run("eval", "--model", mergedDir, "--text", textPath, "--json");
        Assert.True(evalMerged.ExitCode == 0, evalMerged.Stderr);
        Assert.Equal(want, evalMerged.Json().GetProperty("nll").GetDouble(), 1e-4);

        CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", textPath, "--adapter", outDir, "--rank", "1"));
    }

    [Fact]
    public void ResumedAdaLoraRunEqualsTheUninterruptedOne()
    {
        var dir = TinyGpt2(out _);
        var straight = Path.Combine(TinyCheckpoints.NewTempDirectory(), "a");
        var resumed = Path.Combine(TinyCheckpoints.NewTempDirectory(), "b");
        Assert.Equal(0, CliRunner.Run([.. TrainArgs(dir, straight), "--save-steps", "3"]).ExitCode);
        Assert.Equal(0, CliRunner.Run([.. TrainArgs(dir, resumed), "--save-steps", "3"]).ExitCode);
        // Step 3 is inside the budgeting phase: the importance EMAs and the allocation must survive the restart.
        Assert.True(File.Exists(Path.Combine(resumed, "checkpoint-3", "adalora_allocator.safetensors")));
        Directory.Delete(Path.Combine(resumed, "checkpoint-6"), recursive: true);
        File.Delete(Path.Combine(resumed, "adapter_model.safetensors"));
        var again = CliRunner.Run([.. TrainArgs(dir, resumed), "--save-steps", "3", "--resume"]);
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.Equal(File.ReadAllText(Path.Combine(straight, "adapter_config.json")).Replace(straight, "X"),
            File.ReadAllText(Path.Combine(resumed, "adapter_config.json")).Replace(resumed, "X"));
        var a = NaiveSafetensors.Read(Path.Combine(straight, "adapter_model.safetensors"));
        var b = NaiveSafetensors.Read(Path.Combine(resumed, "adapter_model.safetensors"));
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (key, t) in a)
        {
            Assert.Equal(t.Shape, b[key].Shape);
            for (int i = 0; i < t.Values.Length; i++) Assert.Equal(t.Values[i], b[key].Values[i], 5);
        }
    }
}
