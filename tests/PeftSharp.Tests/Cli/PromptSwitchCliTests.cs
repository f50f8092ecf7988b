using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary>Several prompt adapters on the command line: --adapter NAME=DIR (repeated) and --active-adapter NAME.</summary>
public class PromptSwitchCliTests
{
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 64 };

    static string Folder(string root, string name, int tokens, int seed)
    {
        string dir = Path.Combine(root, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), $$"""
            {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": {{tokens}}, "token_dim": 16, "num_attention_heads": 2,
             "num_layers": 2, "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM", "inference_mode": true}
            """);
        var r = new Random(seed);
        var values = Enumerable.Range(0, tokens * 16).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), [new NaiveTensor("prompt_embeddings", NaiveDType.F32, [tokens, 16], values)],
            new Dictionary<string, string> { ["format"] = "pt" });
        return dir;
    }

    [Fact]
    public void EvalAndGenerateSwitchPromptAdaptersByName()
    {
        var model = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(model, Config, new TinyGpt2Options { Seed = 71 });
        File.WriteAllText(Path.Combine(model, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        string text = Path.Combine(model, "text.txt");
        File.WriteAllText(text, "Hello world, the hello! O Romeo, Romeo!\n");
        string a = Folder(model, "a", 3, 72), b = Folder(model, "b", 5, 73);

        double Nll(params string[] adapterArgs)
        {
            var r = CliRunner.Run(["eval", "--model", model, "--text", text, "--json", .. adapterArgs]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            return r.Json().GetProperty("nll").GetDouble();
        }
        double onlyA = Nll("--adapter", a), onlyB = Nll("--adapter", b);
        Assert.NotEqual(onlyA, onlyB, 6);
        Assert.Equal(onlyB, Nll("--adapter", $"first={a}", "--adapter", $"second={b}", "--active-adapter", "second"), 6);
        Assert.Equal(onlyA, Nll("--adapter", $"first={a}", "--adapter", $"second={b}", "--active-adapter", "first"), 6);
        // Unnamed folders: the first is "default".
        Assert.Equal(onlyA, Nll("--adapter", a, "--adapter", b, "--active-adapter", "default"), 6);

        var g = CliRunner.Run("generate", "--model", model, "--prompt", "Hello", "--max-new-tokens", "4", "--json",
            "--adapter", $"first={a}", "--adapter", $"second={b}", "--active-adapter", "second");
        Assert.True(g.ExitCode == 0, g.Stderr);
        var gb = CliRunner.Run("generate", "--model", model, "--prompt", "Hello", "--max-new-tokens", "4", "--json", "--adapter", b);
        Assert.Equal(gb.Json().GetProperty("completion").GetString(), g.Json().GetProperty("completion").GetString());

        // Two prompts of one method active at once, or an unknown name: one line saying what to do.
        var both = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", model, "--text", text, "--adapter", $"first={a}", "--adapter", $"second={b}"));
        Assert.Contains("--active-adapter", both);
        var unknown = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", model, "--text", text, "--adapter", $"first={a}", "--active-adapter", "third"));
        Assert.Contains("no adapter named \"third\"", unknown);
    }
}
