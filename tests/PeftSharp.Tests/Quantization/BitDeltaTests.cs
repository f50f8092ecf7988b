using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Quantization.BitDelta;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// BitDelta against loops: the packing bit order by hand; signs, scales (mean |Δ|) and the reconstruction
/// W_base + scale·sign of a tiny Llama pair; `eval --delta` equal to the reference model run on weights rebuilt by
/// loops; distillation lowering the logits MSE; bad input refused in one line.
/// </summary>
public class BitDeltaTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";

    static NaiveLlamaConfig Config => new() { ModelType = "llama", VocabSize = 1003, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2,
                                              NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 64 };

    static bool IsBlockLinear(string name) => name.Contains(".layers.") && name.EndsWith("_proj.weight");

    /// <summary>A base folder and a "fine-tuned" folder: every block linear and the embedding perturbed, norms unchanged.</summary>
    static (string Base, string Finetuned, Dictionary<string, float[]> B, Dictionary<string, float[]> F) Pair()
    {
        var baseDir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(baseDir, Config, new TinyLlamaOptions { Seed = 61, InitStd = 0.3 });
        var rng = new Random(62);
        var ft = ckpt.Weights.ToDictionary(kv => kv.Key, kv => kv.Key.Contains("norm") ? kv.Value : kv.Value.Select(v => v + (float)(rng.NextDouble() - 0.5) * 0.1f).ToArray());
        var ftDir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(ftDir, Config, ft, new TinyLlamaOptions());
        foreach (var dir in new[] { baseDir, ftDir }) File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        return (baseDir, ftDir, ckpt.Weights, ft);
    }

    [Fact]
    public void PacksEightSignsPerByteLeastSignificantBitFirst()
    {
        byte[] flags = [1, 0, 0, 1, 1, 1, 1, 1, 0, 1];
        Assert.Equal(new byte[] { 0xF9, 0x02 }, BitDelta.PackSigns(flags));
        var entry = new BitDelta.Entry("w", [2, 5], BitDelta.PackSigns(flags), 0.5);
        using var signs = BitDelta.UnpackSigns(entry, ScalarType.Float32, CPU);
        Assert.Equal([2L, 5L], signs.shape);
        Assert.Equal(flags.Select(f => f == 1 ? 1f : -1f).ToArray(), signs.reshape(-1).data<float>().ToArray());
    }

    [Fact]
    public void SignsScalesAndReconstructionMatchLoops()
    {
        var (baseDir, ftDir, b, f) = Pair();
        using var baseModel = ModelLoader.Load(baseDir);
        using var ftModel = ModelLoader.Load(ftDir);
        using var delta = BitDelta.Compress(baseModel, ftModel);
        Assert.Equal(b.Keys.Where(IsBlockLinear).Order(), delta.Entries.Select(e => e.Name).Order());
        Assert.Equal(["lm_head.weight", "model.embed_tokens.weight"], delta.Full.Keys.Order()); // norms are unchanged
        foreach (var e in delta.Entries)
        {
            var d = f[e.Name].Select((v, i) => (double)v - b[e.Name][i]).ToArray();
            Assert.Equal(d.Average(Math.Abs), e.Scale, 6);
            using var signs = BitDelta.UnpackSigns(e, ScalarType.Float32, CPU);
            Assert.Equal(d.Select(x => x >= 0 ? 1f : -1f).ToArray(), signs.reshape(-1).data<float>().ToArray());
        }
        delta.ApplyTo(baseModel);
        var rebuilt = baseModel.named_parameters().ToDictionary(p => p.name, p => p.parameter.data<float>().ToArray());
        foreach (var e in delta.Entries)
        {
            var d = f[e.Name].Select((v, i) => (double)v - b[e.Name][i]).ToArray();
            for (int i = 0; i < d.Length; i++)
            {
                double want = b[e.Name][i] + e.Scale * (d[i] >= 0 ? 1 : -1);
                Assert.True(Math.Abs(want - rebuilt[e.Name][i]) < 1e-5, $"{e.Name}[{i}]: {want} vs {rebuilt[e.Name][i]}");
            }
        }
        Assert.Equal(f["model.embed_tokens.weight"], rebuilt["model.embed_tokens.weight"]);
    }

    [Fact]
    public void EvalWithDeltaScoresTheRebuiltModelAndDistillationLowersTheMse()
    {
        var (baseDir, ftDir, b, f) = Pair();
        var textPath = Path.Combine(TinyCheckpoints.NewTempDirectory(), "t.txt");
        File.WriteAllText(textPath, string.Concat(Enumerable.Repeat(Text, 6)));
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "delta");
        var r = CliRunner.Run("bitdelta", "compress", "--base", baseDir, "--finetuned", ftDir, "--out", outDir, "--calibration", textPath,
                              "--steps", "30", "--lr", "1e-3", "--max-length", "32", "--batch-size", "2", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        Assert.True(json.GetProperty("distill_mse_last").GetDouble() < json.GetProperty("distill_mse_first").GetDouble(), r.Stdout);
        // Signs and scales: ~1/16 of a 16-bit delta (1 bit per weight + 4 bytes a matrix).
        Assert.InRange(json.GetProperty("ratio").GetDouble(), 1.0 / 16, 1.0 / 16 + 0.02);

        // Rebuild by loops with the stored (distilled) scales, and score with the reference model.
        using var delta = BitDelta.Load(outDir);
        var weights = new Dictionary<string, float[]>(f);
        foreach (var e in delta.Entries)
            weights[e.Name] = b[e.Name].Select((v, i) => (float)(v + e.Scale * (f[e.Name][i] - v >= 0 ? 1 : -1))).ToArray();
        var ids = TinyBpe.ReferenceEncode(Text).ToArray();
        double want = NaiveScoring.WindowedMeanNll(ids, Config.MaxPositionEmbeddings, new NaiveLlama(Config, weights).Logits).MeanNll;
        File.WriteAllText(textPath, Text);
        var eval = CliRunner.Run("eval", "--model", baseDir, "--delta", outDir, "--text", textPath, "--json");
        Assert.True(eval.ExitCode == 0, eval.Stderr);
        Assert.Equal(want, eval.Json().GetProperty("nll").GetDouble(), 4);
    }

    [Fact]
    public void MismatchedModelsAreOneLineErrors()
    {
        var (baseDir, _, _, _) = Pair();
        var other = TinyCheckpoints.NewTempDirectory();
        var cfg = new NaiveLlamaConfig { ModelType = "llama", VocabSize = 1003, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2,
                                         NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 64 };
        TinyCheckpoints.WriteLlama(other, cfg, new TinyLlamaOptions { Seed = 3 });
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "delta");
        var r = CliRunner.Run("bitdelta", "compress", "--base", baseDir, "--finetuned", other, "--out", outDir);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("mlp", r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.False(Directory.Exists(outDir));
        var missing = CliRunner.Run("eval", "--model", baseDir, "--delta", other, "--text", baseDir + "/config.json");
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("bitdelta_config.json", missing.Stderr);
    }
}
