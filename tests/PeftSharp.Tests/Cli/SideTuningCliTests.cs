using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// LST and side tuning through the command line: train writes the documented folder, eval / generate / inspect load it
/// through PeftModel, and bad flags are one-line errors with exit code 1.
/// </summary>
public class SideTuningCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo?\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 128 };

    static string Model()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 93 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "text.txt"), Text);
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 6)));
        return dir;
    }

    [Theory]
    [InlineData("lst", "LST")]
    [InlineData("side-tuning", "SIDE_TUNING")]
    public void TrainThenEvalGenerateInspect(string method, string peftType)
    {
        var model = Model();
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), method);
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "data.txt"), "--out", outDir, "--method", method,
            "--side-reduction-factor", "2", "--steps", "3", "--lr", "1e-2", "--batch-size", "2", "--seq-len", "24", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        Assert.Equal(peftType, cfg.RootElement.GetProperty("peft_type").GetString());
        Assert.Equal(2, cfg.RootElement.GetProperty("reduction_factor").GetInt32());
        var tensors = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.All(tensors.Keys, k => Assert.StartsWith("base_model.model.side_network.", k));
        Assert.Equal([16, 8], tensors["base_model.model.side_network.upsample.weight"].Shape);
        // The up-projection starts at zero for LST; after training it is not.
        Assert.Contains(tensors["base_model.model.side_network.upsample.weight"].Values, v => v != 0);

        var e = CliRunner.Run("eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--adapter", outDir, "--json");
        Assert.True(e.ExitCode == 0, e.Stderr);
        Assert.True(double.IsFinite(e.Json().GetProperty("nll").GetDouble()));
        var g = CliRunner.Run("generate", "--model", model, "--adapter", outDir, "--prompt", "Romeo", "--max-new-tokens", "4", "--json");
        Assert.True(g.ExitCode == 0, g.Stderr);
        var i = CliRunner.Run("inspect", "--model", model, "--adapter", outDir, "--json");
        Assert.True(i.ExitCode == 0, i.Stderr);
        Assert.Equal(tensors.Values.Sum(t => t.ElementCount), i.Json().GetProperty("trainable_params").GetInt64());
    }

    [Fact]
    public void ReductionFactorThatDoesNotDivideIsAOneLineError()
    {
        var model = Model();
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "data.txt"), "--out", Path.Combine(TinyCheckpoints.NewTempDirectory(), "x"),
            "--method", "lst", "--side-reduction-factor", "3", "--steps", "1", "--seq-len", "24");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("reduction_factor", r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }
}
