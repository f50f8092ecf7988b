using System.Text.Json;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Tuners.UniPelt;

/// <summary>train --method unipelt writes a UNIPELT folder; eval, generate and inspect read it through PeftModel.</summary>
public class UniPeltCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo?\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 128 };

    internal static string Model()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 93 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "text.txt"), Text);
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 6)));
        return dir;
    }

    [Fact]
    public void TrainEvalGenerateInspect()
    {
        var model = Model();
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "unipelt");
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "data.txt"), "--out", outDir, "--method", "unipelt",
            "--r", "2", "--num-virtual-tokens", "3", "--adapter-dim", "4", "--steps", "3", "--lr", "1e-2", "--batch-size", "2", "--seq-len", "24", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        Assert.Equal("UNIPELT", cfg.RootElement.GetProperty("peft_type").GetString());
        Assert.Equal(3, cfg.RootElement.GetProperty("num_virtual_tokens").GetInt32());
        var tensors = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal([3, 2 * 2 * 16], tensors["base_model.model.unipelt_prefix.weight"].Shape);
        // Training moved the zero-initialised LoRA B.
        Assert.Contains(tensors["base_model.model.transformer.h.0.attn.c_attn.unipelt_lora_B.weight"].Values, v => v != 0);

        var e = CliRunner.Run("eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--adapter", outDir, "--json");
        Assert.True(e.ExitCode == 0, e.Stderr);
        Assert.True(double.IsFinite(e.Json().GetProperty("nll").GetDouble()));
        var g = CliRunner.Run("generate", "--model", model, "--adapter", outDir, "--prompt", "Romeo", "--max-new-tokens", "4");
        Assert.True(g.ExitCode == 0, g.Stderr);

        var i = CliRunner.Run("inspect", "--model", model, "--adapter", outDir, "--json");
        Assert.True(i.ExitCode == 0, i.Stderr);
        const int E = 16, L = 2, R = 2, P = 3, D = 4;
        long expected = L * ((R * E + 3 * E * R + E + 1) + (D * E + E * D + E + 1) + (E + 1)) + P * L * 2 * E;
        Assert.Equal(expected, i.Json().GetProperty("trainable_params").GetInt64());
        Assert.Equal(expected, tensors.Values.Sum(t => t.Values.LongLength));

        var exportDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "parts");
        var x = CliRunner.Run("unipelt-export", "--model", model, "--adapter", outDir, "--data", Path.Combine(model, "text.txt"), "--out", exportDir, "--json");
        Assert.True(x.ExitCode == 0, x.Stderr);
        Assert.Equal(2, x.Json().GetProperty("prefix_gates").GetArrayLength());
        foreach (var part in new[] { "lora", "prefix", "bottleneck" }) Assert.True(File.Exists(Path.Combine(exportDir, part, "adapter_model.safetensors")), part);
        var ev = CliRunner.Run("eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--adapter", Path.Combine(exportDir, "lora"),
            "--adapter", Path.Combine(exportDir, "prefix"), "--adapter", Path.Combine(exportDir, "bottleneck"), "--json");
        Assert.True(ev.ExitCode == 0, ev.Stderr);
    }

    [Fact]
    public void BadFlagIsOneLineError()
    {
        var model = Model();
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "data.txt"), "--out", Path.Combine(model, "o"), "--method", "unipelt",
            "--num-virtual-tokens", "0", "--steps", "1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("num_virtual_tokens", r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }
}
