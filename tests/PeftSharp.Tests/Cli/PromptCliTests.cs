using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// Soft prompts through the command line: train --method prompt-tuning / prefix-tuning writes PEFT's folder
/// (one prompt_embeddings tensor), eval scores it as the naive GPT-2 with those virtual tokens / prefixes does
/// (PEFT's loss: the first token predicted from the last virtual token), inspect counts the prompt, bad input exits 1.
/// </summary>
public class PromptCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo?\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 128 };

    static string Model(out TinyCheckpoint ckpt)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        ckpt = TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 93 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "text.txt"), Text);
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 6)));
        return dir;
    }

    static double[][] Rows(NaiveTensor t) =>
        Enumerable.Range(0, t.Shape[0]).Select(i => t.Values.Skip(i * t.Shape[1]).Take(t.Shape[1]).Select(x => (double)x).ToArray()).ToArray();

    /// <summary>PEFT's NLL over the text: the first token from the last virtual token, the rest as usual.</summary>
    static double PeftNll(NaiveGpt2 withPrompt, NaiveGpt2 lastVirtualAsToken, int z, int[] ids)
    {
        var first = lastVirtualAsToken.Logits([z]);
        var rest = withPrompt.Logits(ids);
        double Nll(float[,] l, int row, int target)
        {
            var x = Enumerable.Range(0, l.GetLength(1)).Select(j => (double)l[row, j]).ToArray();
            double max = x.Max();
            return max + Math.Log(x.Sum(v => Math.Exp(v - max))) - x[target];
        }
        double total = Nll(first, 0, ids[0]);
        for (int i = 0; i + 1 < ids.Length; i++) total += Nll(rest, i, ids[i + 1]);
        return total / ids.Length;
    }

    [Fact]
    public void TrainPromptTuningThenEvalAndInspect()
    {
        var model = Model(out var ckpt);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "pt");
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "data.txt"), "--out", outDir, "--method", "prompt-tuning",
            "--num-virtual-tokens", "4", "--prompt-init", "TEXT", "--prompt-init-text", "Romeo", "--steps", "3", "--lr", "5e-2", "--batch-size", "2", "--seq-len", "24", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        Assert.Equal("PROMPT_TUNING", cfg.RootElement.GetProperty("peft_type").GetString());
        Assert.Equal(16, cfg.RootElement.GetProperty("token_dim").GetInt32());
        Assert.Equal("TEXT", cfg.RootElement.GetProperty("prompt_tuning_init").GetString());
        var tensors = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal(["prompt_embeddings"], tensors.Keys.ToArray());
        var prompt = tensors["prompt_embeddings"];
        Assert.Equal([4, 16], prompt.Shape);

        // The reference: the last virtual row placed as a token's embedding (token z's row replaced) predicts the first token.
        var ids = TinyBpe.ReferenceEncode(Text).ToArray();
        var rows = Rows(prompt);
        const int z = 5;
        var weights = new Dictionary<string, float[]>(ckpt.Weights);
        var wte = (float[])weights["transformer.wte.weight"].Clone();
        for (int j = 0; j < 16; j++) wte[z * 16 + j] = (float)rows[3][j];
        weights["transformer.wte.weight"] = wte;
        double want = PeftNll(new NaiveGpt2(Config, ckpt.Weights) { Hooks = new NaiveHooks { VirtualTokens = rows } },
            new NaiveGpt2(Config, weights) { Hooks = new NaiveHooks { VirtualTokens = rows[..3] } }, z, ids);
        var e = CliRunner.Run("eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--adapter", outDir, "--json");
        Assert.True(e.ExitCode == 0, e.Stderr);
        Assert.Equal(ids.Length, e.Json().GetProperty("tokens").GetInt64());
        Assert.Equal(want, e.Json().GetProperty("nll").GetDouble(), 1e-4);

        var i = CliRunner.Run("inspect", "--model", model, "--adapter", outDir, "--json");
        Assert.True(i.ExitCode == 0, i.Stderr);
        Assert.Equal(4 * 16, i.Json().GetProperty("trainable_params").GetInt64());
        Assert.Contains("prompt_tuning", i.Stderr + i.Stdout);

        var g = CliRunner.Run("generate", "--model", model, "--adapter", outDir, "--prompt", "Romeo", "--max-new-tokens", "4", "--json");
        Assert.True(g.ExitCode == 0, g.Stderr);
    }

    [Fact]
    public void TrainPrefixTuningWritesFlattenedPrefixes()
    {
        var model = Model(out _);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "prefix");
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "data.txt"), "--out", outDir, "--method", "prefix-tuning",
            "--num-virtual-tokens", "3", "--prefix-projection", "--encoder-hidden-size", "8", "--steps", "2", "--batch-size", "2", "--seq-len", "24", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var prompt = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"))["prompt_embeddings"];
        Assert.Equal([3, 2 * 2 * 16], prompt.Shape); // num_layers · 2 · token_dim, the projection's output
        var e = CliRunner.Run("eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--adapter", outDir, "--json");
        Assert.True(e.ExitCode == 0, e.Stderr);
    }

    [Fact]
    public void BadPromptInputExitsOneWithOneLine()
    {
        var model = Model(out _);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "bad");
        var line = CliRunner.AssertUserError(CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "data.txt"), "--out", outDir,
            "--method", "prompt-tuning", "--num-virtual-tokens", "0", "--steps", "1"));
        Assert.Contains("num_virtual_tokens", line);
        var folder = TinyCheckpoints.NewTempDirectory("peftsharp-prompt-");
        File.WriteAllText(Path.Combine(folder, "adapter_config.json"), """{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2, "token_dim": 16, "num_layers": 2, "num_attention_heads": 2, "num_transformer_submodules": 1}""");
        NaiveSafetensors.Write(Path.Combine(folder, "adapter_model.safetensors"), [new NaiveTensor("prompt_embeddings", NaiveDType.F32, [2, 8], new float[16])]);
        line = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--adapter", folder));
        Assert.Contains("adapter_model.safetensors", line);
        Assert.Contains("'prompt_embeddings'", line);
        Assert.Contains("hidden size 16", line);
    }
}
