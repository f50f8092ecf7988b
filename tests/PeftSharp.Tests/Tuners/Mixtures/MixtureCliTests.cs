using System.Text.Json;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Tuners.Mixtures;

/// <summary><c>train --method mixlora|molora|mov</c>, <c>experts</c>, <c>inspect</c> and the one-line errors, on a tiny GPT-2.</summary>
public class MixtureCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };

    static string TinyGpt2()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 131 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 4)));
        return dir;
    }

    static string[] Train(string dir, string outDir, string method, params string[] extra) =>
        ["train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir, "--method", method, "--steps", "3",
         "--lr", "1e-2", "--batch-size", "2", "--seq-len", "16", "--r", "2", "--alpha", "4", "--num-experts", "4", .. extra];

    [Fact]
    public void MixLoraTrainsWithTheAuxLossAndExpertsReportsUsage()
    {
        var dir = TinyGpt2();
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "mix");
        var r = CliRunner.Run(Train(dir, outDir, "mixlora", "--top-k", "2", "--aux-loss-coef", "0.01"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("MixLoRA load-balancing loss × 0.01", r.Stderr);
        using (var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json"))))
        {
            Assert.Equal("MIXLORA", cfg.RootElement.GetProperty("peft_type").GetString());
            Assert.Equal(4, cfg.RootElement.GetProperty("num_experts").GetInt32());
            Assert.Equal(0.01, cfg.RootElement.GetProperty("router_aux_loss_coef").GetDouble());
        }
        var keys = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors")).Keys.ToList();
        Assert.Contains("mixlora.layers.1.mlp.c_fc.experts.3.lora_B.weight", keys);
        Assert.Contains("mixlora.layers.0.self_attn.c_attn.lora_A.weight", keys);

        var png = Path.Combine(TinyCheckpoints.NewTempDirectory(), "heat.png");
        var e = CliRunner.Run("experts", "--model", dir, "--adapter", outDir, "--text", Text, "--png", png, "--json");
        Assert.True(e.ExitCode == 0, e.Stderr);
        Assert.True(new FileInfo(png).Length > 0);
        using var result = JsonDocument.Parse(e.Stdout.Trim().Split('\n')[^1]);
        var routers = result.RootElement.GetProperty("routers").EnumerateArray().ToList();
        Assert.Equal(["layer 0", "layer 1"], routers.Select(x => x.GetProperty("label").GetString()));
        long tokens = result.RootElement.GetProperty("tokens").GetInt64();
        foreach (var x in routers)
            Assert.Equal(2 * tokens, x.GetProperty("counts").EnumerateArray().Sum(c => c.GetDouble())); // top-2: two choices per token

        var inspect = CliRunner.Run("inspect", "--model", dir, "--adapter", outDir);
        Assert.True(inspect.ExitCode == 0, inspect.Stderr);
        Assert.Contains("mixlora", inspect.Stderr);
        Assert.Contains("4e top-2 r2", inspect.Stderr);
        // Per layer: c_attn LoRA 2·16 + 48·2, attn.c_proj LoRA 2·16 + 16·2, gate 4·16, 4 c_fc experts 4·(2·16 + 64·2), 4 c_proj experts 4·(2·64 + 16·2).
        Assert.Contains($"trainable params: {2 * (128 + 64 + 64 + 640 + 640):N0}", inspect.Stdout);
    }

    [Theory]
    [InlineData("molora", "MOLORA")]
    [InlineData("mov", "MOV")]
    public void DenseMixturesTrainAndLoadBack(string method, string peftType)
    {
        var dir = TinyGpt2();
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), method);
        var r = CliRunner.Run(Train(dir, outDir, method));
        Assert.True(r.ExitCode == 0, r.Stderr);
        using (var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json"))))
            Assert.Equal(peftType, cfg.RootElement.GetProperty("peft_type").GetString());
        File.WriteAllText(Path.Combine(dir, "eval.txt"), Text);
        var ev = CliRunner.Run("eval", "--model", dir, "--adapter", outDir, "--text", Path.Combine(dir, "eval.txt"));
        Assert.True(ev.ExitCode == 0, ev.Stderr);
        var gen = CliRunner.Run("generate", "--model", dir, "--adapter", outDir, "--prompt", "Hello", "--max-new-tokens", "4");
        Assert.True(gen.ExitCode == 0, gen.Stderr);
    }

    [Fact]
    public void TopKAboveTheExpertCountIsAOneLineErrorWithExitCode1()
    {
        var dir = TinyGpt2();
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "bad");
        var r = CliRunner.Run(Train(dir, outDir, "mixlora", "--top-k", "5"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("top_k", r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }
}
