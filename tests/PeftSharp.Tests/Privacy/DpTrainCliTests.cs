using System.Text.Json;
using PeftSharp.Privacy;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Privacy;

/// <summary><c>train --dp-…</c> end to end on a tiny GPT-2.</summary>
public class DpTrainCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };

    static string TinyGpt2()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 5 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 12)));
        return dir;
    }

    static string[] Args(string dir, string outDir, params string[] extra) =>
        ["train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir, "--steps", "4", "--lr", "1e-2",
         "--batch-size", "2", "--seq-len", "16", "--json", .. extra];

    [Fact]
    public void DpTrainingReportsTheAccountantsEpsilonAndSolvesForNoise()
    {
        var dir = TinyGpt2();
        var r = CliRunner.Run(Args(dir, Path.Combine(dir, "out1"), "--dp-noise-multiplier", "1.1", "--dp-max-grad-norm", "0.5", "--dp-delta", "1e-4"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        double q = json.GetProperty("sample_rate").GetDouble();
        Assert.InRange(q, 0.01, 1);
        Assert.Equal(RdpAccountant.Epsilon(q, 1.1, 4, 1e-4).Epsilon, json.GetProperty("epsilon").GetDouble(), 9);
        Assert.True(File.Exists(Path.Combine(dir, "out1", "adapter_model.safetensors")));

        var t = CliRunner.Run(Args(dir, Path.Combine(dir, "out2"), "--dp-target-epsilon", "2"));
        Assert.True(t.ExitCode == 0, t.Stderr);
        Assert.True(t.Json().GetProperty("epsilon").GetDouble() <= 2);
        double sigma = t.Json().GetProperty("noise_multiplier").GetDouble();
        Assert.True(RdpAccountant.Epsilon(q, sigma * 0.999, 4, 1e-5).Epsilon > 2);
    }

    [Theory]
    [InlineData("--dp-noise-multiplier", "0", "--dp-noise-multiplier")]
    [InlineData("--dp-delta", "1", "--dp-delta")]
    [InlineData("--dp-max-grad-norm", "-1", "--dp-max-grad-norm")]
    [InlineData("--method", "dora", "--method")]
    public void BadDpFlagsAreOneLineErrors(string flag, string value, string named)
    {
        var dir = TinyGpt2();
        var extra = flag == "--dp-noise-multiplier" ? new[] { flag, value } : new[] { "--dp-noise-multiplier", "1", flag, value };
        var r = CliRunner.Run(Args(dir, Path.Combine(dir, "out"), extra));
        Assert.Contains(named, CliRunner.AssertUserError(r));
    }
}
