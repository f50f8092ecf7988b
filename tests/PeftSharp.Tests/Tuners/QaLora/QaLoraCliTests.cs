using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Quantization.Gptq;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Quantization.Gptq;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using PeftSharp.Tuners.QaLora;

namespace PeftSharp.Tests.Tuners.QaLora;

/// <summary>
/// <c>train --method qa-lora</c> then <c>merge</c> end to end on a tiny GPT-2 (Conv1D layers): the adapter is PEFT's
/// LoRA config with use_qalora, the default merge is exact, <c>--integer-zeros</c> writes a v1 folder and reports
/// its rounding, and bad flags are one-line errors with exit code 1.
/// </summary>
public class QaLoraCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 32, NLayer = 2, NHead = 2, NPositions = 32 };

    static string TinyGpt2()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 8 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 12)));
        return dir;
    }

    static string[] Train(string dir, string outDir, params string[] extra) =>
        ["train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir, "--method", "qa-lora", "--steps", "3", "--lr", "5e-2",
         "--batch-size", "2", "--seq-len", "16", "--target", "c_attn,c_fc", "--json", .. extra];

    [Fact]
    public void TrainThenMergeWritesExactAndIntegerGptqFolders()
    {
        var dir = TinyGpt2();
        var adapter = Path.Combine(dir, "adapter");
        var t = CliRunner.Run(Train(dir, adapter, "--bits", "4", "--group-size", "16"));
        Assert.True(t.ExitCode == 0, t.Stderr);
        using (var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(adapter, "adapter_config.json"))))
        {
            Assert.Equal("LORA", cfg.RootElement.GetProperty("peft_type").GetString());
            Assert.True(cfg.RootElement.GetProperty("use_qalora").GetBoolean());
            Assert.Equal(16, cfg.RootElement.GetProperty("qalora_group_size").GetInt32());
            Assert.Equal(4, cfg.RootElement.GetProperty("qalora_bits").GetInt32());
        }
        var weights = NaiveGptq.Read(Path.Combine(adapter, "adapter_model.safetensors"));
        Assert.Equal([8, 32 / 16], weights["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"].Shape);
        Assert.Equal([8, 32 / 16], weights["base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight"].Shape);

        var exactDir = Path.Combine(dir, "exact");
        var m = CliRunner.Run("merge", "--model", dir, "--adapter", adapter, "--out", exactDir, "--json");
        Assert.True(m.ExitCode == 0, m.Stderr);
        var j = m.Json();
        Assert.Equal(4, j.GetProperty("layers").GetInt32());
        Assert.InRange(j.GetProperty("fold_max_abs_logit_diff").GetDouble(), 0, 1e-4);
        var exactConfig = GptqConfig.FromModelConfig(ModelConfig.Load(exactDir))!;
        Assert.True(exactConfig.FloatZeros);
        Assert.Equal(16, exactConfig.GroupSize);

        var intDir = Path.Combine(dir, "int");
        var mi = CliRunner.Run("merge", "--model", dir, "--adapter", adapter, "--out", intDir, "--integer-zeros", "--json");
        Assert.True(mi.ExitCode == 0, mi.Stderr);
        Assert.Contains("max |Δ logit|", mi.Stdout);
        var ji = mi.Json();
        double cost = ji.GetProperty("rounding_max_abs_logit_diff").GetDouble();
        Assert.True(cost > 0, $"rounding cost {cost}");
        var intConfig = GptqConfig.FromModelConfig(ModelConfig.Load(intDir))!;
        Assert.False(intConfig.FloatZeros);
        Assert.Equal("gptq", intConfig.CheckpointFormat);

        using var probeModel = ModelLoader.Load(exactDir);
        using var intModel = ModelLoader.Load(intDir);
        using var probe = new LogitProbe(probeModel.Config);
        var d = LogitProbe.Difference(probe.Logits(probeModel), probe.Logits(intModel));
        Assert.Equal(cost, d.Max, 1e-4 + cost * 0.05); // the reported cost is what the two folders differ by (± the fold's round-off)
    }

    [Theory]
    [InlineData("--bits", "5", "--bits: 5 is not supported")]
    [InlineData("--group-size", "24", "--group-size: 24 does not divide")]
    public void BadFlagsAreOneLineErrors(string flag, string value, string expected)
    {
        var dir = TinyGpt2();
        var r = CliRunner.Run(Train(dir, Path.Combine(dir, "out"), flag, value));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(expected, r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'), l => l.Contains(expected));
        Assert.DoesNotContain("   at ", r.Stderr);
    }
}
