using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary><c>train --method fusion</c> over two trained Houlsby adapters: writes AdapterHub's fusion folder, eval reads it.</summary>
public class FusionCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };

    [Fact]
    public void TrainFusionOverTwoAdaptersAndEvalIt()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 92 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        string data = Path.Combine(dir, "data.txt");
        File.WriteAllText(data, string.Concat(Enumerable.Repeat(Text, 6)));
        string[] common = ["--data", data, "--steps", "2", "--lr", "1e-2", "--batch-size", "2", "--seq-len", "32"];
        var root = TinyCheckpoints.NewTempDirectory();
        string lower = Path.Combine(root, "lower"), upper = Path.Combine(root, "upper"), fused = Path.Combine(root, "fused");
        foreach (var (outDir, seed) in new[] { (lower, "1"), (upper, "2") })
        {
            var t = CliRunner.Run(["train", "--model", dir, "--out", outDir, "--method", "pfeiffer", "--bottleneck-size", "4", "--seed", seed, .. common]);
            Assert.True(t.ExitCode == 0, t.Stderr);
        }
        var r = CliRunner.Run(["train", "--model", dir, "--out", fused, "--method", "fusion", "--fuse", lower, "--fuse", upper, "--json", .. common]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(fused, "adapter_fusion_config.json"))))
            Assert.Equal(["lower", "upper"], doc.RootElement.GetProperty("adapter_names").EnumerateArray().Select(e => e.GetString()!).ToArray());
        Assert.True(File.Exists(Path.Combine(fused, "lower", "adapter.safetensors")));

        var textPath = Path.Combine(root, "t.txt");
        File.WriteAllText(textPath, Text);
        var e = CliRunner.Run("eval", "--model", dir, "--text", textPath, "--adapter", fused, "--json");
        Assert.True(e.ExitCode == 0, e.Stderr);
        Assert.True(double.IsFinite(e.Json().GetProperty("nll").GetDouble()));
        var inspect = CliRunner.Run("inspect", "--model", dir, "--adapter", fused, "--json");
        Assert.True(inspect.ExitCode == 0, inspect.Stderr);
        // Per layer (Pfeiffer: after the MLP only): query and key H·H + H, value H·H.
        Assert.Equal(2 * (2 * (16 * 16 + 16) + 16 * 16), inspect.Json().GetProperty("trainable_params").GetInt64());

        var bad = CliRunner.AssertUserError(CliRunner.Run(["train", "--model", dir, "--out", Path.Combine(root, "x"), "--method", "fusion", "--fuse", lower, .. common]));
        Assert.Contains("--fuse", bad);
    }
}
