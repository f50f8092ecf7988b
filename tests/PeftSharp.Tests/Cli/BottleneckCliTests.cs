using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using PeftSharp.Tests.Tuners.Bottleneck;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// Bottleneck adapter folders in both formats, written by hand, scored through <c>eval --adapter</c> against the plain-loop
/// reference; merge refuses them in one line; inspect counts by formula; train writes each format.
/// </summary>
public class BottleneckCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };

    static string TinyGpt2(out TinyCheckpoint ckpt)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        ckpt = TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 91 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 6)));
        return dir;
    }

    static double CliNll(string modelDir, params string[] extra)
    {
        var textPath = Path.Combine(TinyCheckpoints.NewTempDirectory(), "t.txt");
        File.WriteAllText(textPath, Text);
        var r = CliRunner.Run(["eval", "--model", modelDir, "--text", textPath, "--json", .. extra]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        return r.Json().GetProperty("nll").GetDouble();
    }

    static double NaiveNll(Func<int[], float[,]> logits) =>
        NaiveScoring.WindowedMeanNll(TinyBpe.ReferenceEncode(Text).ToArray(), Config.NPositions, logits).MeanNll;

    [Theory]
    [InlineData("llm-adapters")]
    [InlineData("adapterhub")]
    public void EvalScoresAHandWrittenFolderAsThePlainLoopsAndMergeRefusesIt(string format)
    {
        string dir = TinyGpt2(out var ckpt);
        var naive = new NaiveAdaptedGpt2(Config, ckpt.Weights);
        string folder = Path.Combine(TinyCheckpoints.NewTempDirectory(), "adapter");
        if (format == "llm-adapters") BottleneckFormatTests.WriteLlmAdaptersFolder(folder, naive);
        else BottleneckFormatTests.WriteAdapterHubFolder(folder, "shakespeare", naive);
        double want = NaiveNll(naive.Logits);
        Assert.True(Math.Abs(want - NaiveNll(new NaiveGpt2(Config, ckpt.Weights).Logits)) > 1e-3);
        Assert.Equal(want, CliNll(dir, "--adapter", folder), 1e-4);

        var merged = Path.Combine(TinyCheckpoints.NewTempDirectory(), "merged");
        var line = CliRunner.AssertUserError(CliRunner.Run("merge", "--model", dir, "--adapter", folder, "--out", merged));
        Assert.Contains("bottleneck adapters cannot be merged", line);
        Assert.False(Directory.Exists(merged));
    }

    [Fact]
    public void InspectCountsParametersByFormula()
    {
        string dir = TinyGpt2(out _);
        string hub = BottleneckFormatTests.WriteAdapterHubFolder(Path.Combine(TinyCheckpoints.NewTempDirectory(), "hub"), "x", null);
        var r = CliRunner.Run("inspect", "--model", dir, "--adapter", hub, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        // Houlsby, d = 16 // 8 = 2: two locations per layer, (16·2 + 2) + (2·16 + 16) each.
        Assert.Equal(2 * 2 * (16 * 2 + 2 + 2 * 16 + 16), r.Json().GetProperty("trainable_params").GetInt64());

        string llm = BottleneckFormatTests.WriteLlmAdaptersFolder(Path.Combine(TinyCheckpoints.NewTempDirectory(), "llm"), null);
        r = CliRunner.Run("inspect", "--model", dir, "--adapter", llm, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        // d = 3 on c_fc (input side, 16 → 3 → 16) and mlp.c_proj (output side, 16 → 3 → 16), per layer.
        Assert.Equal(2 * (2 * 16 * 3 + 2 * 16 * 3), r.Json().GetProperty("trainable_params").GetInt64());
    }

    [Theory]
    [InlineData("houlsby", "adapter.safetensors")]
    [InlineData("bottleneck", "adapter_model.safetensors")]
    public void TrainWritesEachFormatAndEvalReadsItBack(string method, string weightsFile)
    {
        string dir = TinyGpt2(out _);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "adapter");
        string[] extra = method == "bottleneck" ? ["--use-parallel-adapter", "--bottleneck-size", "4"] : ["--bottleneck-size", "4"];
        var r = CliRunner.Run(["train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir, "--method", method, "--steps", "3",
            "--lr", "1e-2", "--batch-size", "2", "--seq-len", "32", "--json", .. extra]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.True(File.Exists(Path.Combine(outDir, weightsFile)));
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        if (method == "bottleneck")
        {
            Assert.Equal("BOTTLENECK", config.RootElement.GetProperty("peft_type").GetString());
            Assert.True(config.RootElement.GetProperty("use_parallel_adapter").GetBoolean());
            Assert.Equal("mam_adapter", config.RootElement.GetProperty("init_weights").GetString());
        }
        else
        {
            Assert.Equal(method == "parallel", config.RootElement.GetProperty("config").GetProperty("is_parallel").GetBoolean());
            Assert.Equal("gpt2", config.RootElement.GetProperty("model_type").GetString());
        }
        double trained = CliNll(dir, "--adapter", outDir);
        Assert.NotEqual(CliNll(dir), trained);
    }

    [Fact]
    public void PickleOnlyFolderIsAOneLineError()
    {
        string dir = TinyGpt2(out _);
        string folder = Path.Combine(TinyCheckpoints.NewTempDirectory(), "adapter");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "adapter_config.json"), BottleneckFormatTests.LlmAdaptersConfig);
        File.WriteAllBytes(Path.Combine(folder, "adapter_model.bin"), [0x80, 0x02]);
        var textPath = Path.Combine(TinyCheckpoints.NewTempDirectory(), "t.txt");
        File.WriteAllText(textPath, Text);
        var line = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", textPath, "--adapter", folder));
        Assert.Contains("adapter_model.bin", line);
        Assert.Contains("pickle", line);
    }
}
