using System.Text.Json;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;

namespace PeftSharp.Tests.Composition;

/// <summary>
/// <c>peftsharp merge-models</c> on safetensors folders written by the test's own writer, against mergekit's
/// generalized task arithmetic computed by loops: τᵢ = θᵢ − θ_base, trimmed, weighted, sign-elected on the weighted
/// sum, normalised by the weights that contributed.
/// </summary>
public class CheckpointMergingTests
{
    static readonly int[] Shape = [4, 5];

    static float[] Random(Random rng, int n, double scale = 1) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();

    static string Folder(float[] w, float[] bias, string? config = null)
    {
        var dir = TinyCheckpoints.NewTempDirectory("peftsharp-merge-");
        NaiveSafetensors.Write(Path.Combine(dir, "model.safetensors"),
            [new NaiveTensor("layer.weight", NaiveDType.F32, Shape, w), new NaiveTensor("layer.bias", NaiveDType.F32, [5], bias)]);
        if (config is not null) File.WriteAllText(Path.Combine(dir, "config.json"), config);
        return dir;
    }

    /// <summary>mergekit's GTA for one tensor, by loops.</summary>
    static double[] Expected(float[] b, float[][] models, double[] w, double density, bool elect, bool normalize)
    {
        var deltas = models.Select(m => m.Select((v, i) => (double)v - b[i]).ToArray()).Select(d => elect || density < 1 ? NaiveTaskMerging.Trim(d, density) : d).ToArray();
        var result = new double[b.Length];
        for (int i = 0; i < b.Length; i++)
        {
            double sum = 0, weightSum = 0, vote = 0;
            for (int t = 0; t < deltas.Length; t++) vote += w[t] * deltas[t][i];
            int majority = vote >= 0 ? 1 : -1;
            for (int t = 0; t < deltas.Length; t++)
            {
                double x = w[t] * deltas[t][i];
                if (elect && Math.Sign(x) != majority) continue;
                sum += x;
                weightSum += w[t];
            }
            if (!elect) weightSum = w.Sum();
            if (normalize) sum /= weightSum == 0 ? 1 : weightSum;
            result[i] = b[i] + sum;
        }
        return result;
    }

    [Theory]
    [InlineData("ties", 0.6, null)]          // mergekit's default: normalize
    [InlineData("ties", 0.4, "false")]
    [InlineData("task_arithmetic", 1.0, null)]
    [InlineData("task_arithmetic", 1.0, "true")]
    public void MatchesLoops(string method, double density, string? normalize)
    {
        var rng = new Random(31);
        var bw = Random(rng, 20); var bb = Random(rng, 5);
        var m1w = Random(rng, 20); var m1b = Random(rng, 5);
        var m2w = Random(rng, 20); var m2b = Random(rng, 5);
        var baseDir = Folder(bw, bb, """{"model_type": "llama"}""");
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "merged");
        string[] args = ["merge-models", "--base", baseDir, "--model", Folder(m1w, m1b), "--model", Folder(m2w, m2b), "--weights", "0.7,1.3",
                         "--method", method, "--density", density.ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", outDir, "--json"];
        if (normalize is not null) args = [.. args, "--normalize", normalize];
        var r = CliRunner.Run(args);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(2, r.Json().GetProperty("merged_tensors").GetInt32());
        Assert.Equal("""{"model_type": "llama"}""", File.ReadAllText(Path.Combine(outDir, "config.json")));

        bool elect = method == "ties";
        bool norm = normalize is null ? method == "ties" : normalize == "true";
        var written = NaiveSafetensors.Read(Path.Combine(outDir, "model.safetensors"));
        foreach (var (key, b, m1, m2) in new[] { ("layer.weight", bw, m1w, m2w), ("layer.bias", bb, m1b, m2b) })
        {
            var want = Expected(b, [m1, m2], [0.7, 1.3], density, elect, norm);
            var got = written[key].Values;
            for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(want[i] - got[i]) < 1e-5, $"{key}[{i}]: {want[i]} vs {got[i]}");
        }
    }

    [Fact]
    public void MismatchedShapesAreOneLineNamingTheTensor()
    {
        var rng = new Random(32);
        var baseDir = Folder(Random(rng, 20), Random(rng, 5));
        var other = TinyCheckpoints.NewTempDirectory();
        NaiveSafetensors.Write(Path.Combine(other, "model.safetensors"),
            [new NaiveTensor("layer.weight", NaiveDType.F32, [5, 4], Random(rng, 20)), new NaiveTensor("layer.bias", NaiveDType.F32, [5], Random(rng, 5))]);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "merged");
        var r = CliRunner.Run("merge-models", "--base", baseDir, "--model", other, "--out", outDir);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("layer.weight", r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.False(Directory.Exists(outDir));

        var bad = CliRunner.Run("merge-models", "--base", baseDir, "--model", baseDir, "--weights", "1,2", "--out", outDir);
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("--weights", bad.Stderr);
    }
}
