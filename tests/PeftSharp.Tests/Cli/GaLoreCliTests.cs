using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary><c>train --method full [--optimizer galore-adamw]</c> end to end on a tiny GPT-2.</summary>
public class GaLoreCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";

    static string TinyGpt2()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, new NaiveGpt2Config { VocabSize = 1003, NEmbd = 16, NLayer = 1, NHead = 2, NPositions = 32 }, new TinyGpt2Options { Seed = 7 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 6)));
        return dir;
    }

    [Fact]
    public void GaLoreFullFineTuningResumesExactlyAndWritesAModelFolder()
    {
        var dir = TinyGpt2();
        // Rank 4 < 16: the projector is renewed at steps 0 and 3; the run is cut after step 2 and resumed.
        string[] Args(string outDir) => ["train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir, "--steps", "4",
            "--method", "full", "--optimizer", "galore-adamw", "--galore-rank", "4", "--galore-update-gap", "3", "--galore-scale", "0.25",
            "--lr", "1e-2", "--batch-size", "2", "--seq-len", "32", "--save-steps", "2", "--json"];
        var straight = Path.Combine(TinyCheckpoints.NewTempDirectory(), "a");
        var r = CliRunner.Run(Args(straight));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal("galore-adamw", r.Json().GetProperty("optimizer").GetString());
        Assert.True(r.Json().GetProperty("train_loss_last").GetDouble() < r.Json().GetProperty("train_loss_first").GetDouble());
        var resumed = Path.Combine(TinyCheckpoints.NewTempDirectory(), "b");
        Assert.Equal(0, CliRunner.Run(Args(resumed)).ExitCode);
        Directory.Delete(Path.Combine(resumed, "checkpoint-4"), recursive: true);
        File.Delete(Path.Combine(resumed, "model.safetensors"));
        // The checkpoint holds the projectors (safetensors header read by hand: 8-byte length, then JSON).
        var bytes = File.ReadAllBytes(Path.Combine(resumed, "checkpoint-2", "optimizer.safetensors"));
        var header = System.Text.Encoding.UTF8.GetString(bytes, 8, (int)BitConverter.ToInt64(bytes, 0));
        Assert.Contains("attn.c_attn.weight.projector", header);
        Assert.Contains("mlp.c_proj.weight.projector", header);
        var again = CliRunner.Run([.. Args(resumed), "--resume"]);
        Assert.True(again.ExitCode == 0, again.Stderr);
        var a = NaiveSafetensors.Read(Path.Combine(straight, "model.safetensors"));
        var b = NaiveSafetensors.Read(Path.Combine(resumed, "model.safetensors"));
        var original = NaiveSafetensors.Read(Path.Combine(dir, "model.safetensors"));
        Assert.Equal(original.Keys.Order(), a.Keys.Order());
        foreach (var (key, t) in a) Assert.Equal(t.Values, b[key].Values);
        string cAttn = a.Keys.Single(k => k.EndsWith("h.0.attn.c_attn.weight", StringComparison.Ordinal));
        Assert.NotEqual(original[cAttn].Values, a[cAttn].Values);
        // The folder is a model: eval reads it.
        var textPath = Path.Combine(dir, "score.txt");
        File.WriteAllText(textPath, Text);
        var eval = CliRunner.Run("eval", "--model", straight, "--text", textPath, "--json");
        Assert.True(eval.ExitCode == 0, eval.Stderr);
    }

    [Fact]
    public void GaLoreWithAnAdapterMethodOrAnUnknownOptimizerIsAOneLineError()
    {
        var dir = TinyGpt2();
        string[] Args(params string[] extra) => ["train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out",
            Path.Combine(TinyCheckpoints.NewTempDirectory(), "x"), "--steps", "1", .. extra];
        Assert.Contains("--method full", CliRunner.AssertUserError(CliRunner.Run(Args("--optimizer", "galore-adamw"))));
        Assert.Contains("--optimizer", CliRunner.AssertUserError(CliRunner.Run(Args("--method", "full", "--optimizer", "sgd"))));
        Assert.Contains("--galore-target", CliRunner.AssertUserError(CliRunner.Run(Args("--method", "full", "--optimizer", "galore-adamw", "--galore-target", "nothing"))));
    }
}
