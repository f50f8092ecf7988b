using System.Text.Json;
using PeftSharp.Federated;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Federated;

/// <summary>FedAvg, FFA-LoRA and SVD aggregation against plain loops over hand-made factors; the simulate command end to end.</summary>
public class AggregationTests
{
    const int R = 2, In = 3, Out = 4;

    static double[,] Mat(int rows, int cols, int seed)
    {
        var rnd = new Random(seed);
        var m = new double[rows, cols];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) m[i, j] = Math.Round(rnd.NextDouble() * 2 - 1, 3);
        return m;
    }

    static Tensor T(double[,] m) => tensor(Enumerable.Range(0, m.GetLength(0)).SelectMany(i => Enumerable.Range(0, m.GetLength(1)).Select(j => (float)m[i, j])).ToArray(),
        [m.GetLength(0), m.GetLength(1)]);

    static double[,] Mul(double[,] a, double[,] b)
    {
        var c = new double[a.GetLength(0), b.GetLength(1)];
        for (int i = 0; i < a.GetLength(0); i++) for (int j = 0; j < b.GetLength(1); j++) for (int k = 0; k < a.GetLength(1); k++) c[i, j] += a[i, k] * b[k, j];
        return c;
    }

    static void AssertClose(double[,] want, Tensor got, double tol = 1e-5)
    {
        var v = got.to_type(ScalarType.Float32).contiguous().data<float>().ToArray();
        for (int i = 0; i < want.GetLength(0); i++) for (int j = 0; j < want.GetLength(1); j++)
            Assert.True(Math.Abs(want[i, j] - v[i * want.GetLength(1) + j]) <= tol, $"[{i},{j}] {v[i * want.GetLength(1) + j]} vs {want[i, j]}");
    }

    // Three clients with 1, 2 and 5 samples: weights 1/8, 2/8, 5/8.
    static (List<ClientUpdate> Updates, double[][,] A, double[][,] B, double[] W) Clients(bool sameA = false)
    {
        long[] n = [1, 2, 5];
        var a = Enumerable.Range(0, 3).Select(k => Mat(R, In, sameA ? 100 : 10 + k)).ToArray();
        var b = Enumerable.Range(0, 3).Select(k => Mat(Out, R, 20 + k)).ToArray();
        var updates = Enumerable.Range(0, 3).Select(k => new ClientUpdate($"c{k}",
            new LoraFactors(new() { ["layer"] = (T(a[k]), T(b[k])) }), n[k])).ToList();
        return (updates, a, b, n.Select(x => x / 8.0).ToArray());
    }

    static double[,] WeightedMean(double[][,] ms, double[] w)
    {
        var r = new double[ms[0].GetLength(0), ms[0].GetLength(1)];
        for (int k = 0; k < ms.Length; k++) for (int i = 0; i < r.GetLength(0); i++) for (int j = 0; j < r.GetLength(1); j++) r[i, j] += w[k] * ms[k][i, j];
        return r;
    }

    static double Frobenius(double[,] m) { double s = 0; foreach (var v in m) s += v * v; return Math.Sqrt(s); }

    [Fact]
    public void FedAvgAveragesFactorsBySamplesAndReportsItsInexactness()
    {
        var (updates, a, b, w) = Clients();
        using var agg = LoraAggregation.FedAvg(updates);
        AssertClose(WeightedMean(a, w), agg.Layers["layer"].A);
        AssertClose(WeightedMean(b, w), agg.Layers["layer"].B);

        var exact = WeightedMean(Enumerable.Range(0, 3).Select(k => Mul(b[k], a[k])).ToArray(), w);
        var approx = Mul(WeightedMean(b, w), WeightedMean(a, w));
        var diff = new double[Out, In];
        for (int i = 0; i < Out; i++) for (int j = 0; j < In; j++) diff[i, j] = approx[i, j] - exact[i, j];
        double want = Frobenius(diff) / Frobenius(exact);
        Assert.True(want > 0.01);   // the clients differ: FedAvg is visibly inexact
        Assert.Equal(want, LoraAggregation.FedAvgInexactness(updates), 4);
    }

    [Fact]
    public void FfaLoraAveragesOnlyBAndIsExact()
    {
        var (updates, a, b, w) = Clients(sameA: true);
        using var agg = LoraAggregation.FfaLora(updates);
        AssertClose(a[0], agg.Layers["layer"].A);
        AssertClose(WeightedMean(b, w), agg.Layers["layer"].B);
        Assert.True(LoraAggregation.FedAvgInexactness(updates) < 1e-6);   // same A: mean(B)·A = mean(B·A)
        var (different, _, _, _) = Clients(sameA: false);
        Assert.Throws<PeftSharpException>(() => LoraAggregation.FfaLora(different));
    }

    [Fact]
    public void SvdAggregationIsTheBestRankRApproximationOfTheMeanDelta()
    {
        var (updates, a, b, w) = Clients();
        double s = 2.0;
        var exact = WeightedMean(Enumerable.Range(0, 3).Select(k => Mul(b[k], a[k])).ToArray(), w);
        for (int i = 0; i < Out; i++) for (int j = 0; j < In; j++) exact[i, j] *= s;

        // rank 3 ≥ rank of the 4×3 mean: s·B·A reproduces it exactly.
        using (var full = LoraAggregation.Svd(updates, s, 3))
            AssertClose(exact, full.Layers["layer"].B.matmul(full.Layers["layer"].A).mul(s), 1e-4);

        // rank 2: the error is the smallest singular value (Eckart–Young), found here by power iteration on the 3×3 Gram
        // matrix's inverse-free complement: ‖M‖_F² − σ₁² − σ₂² = σ₃².
        using var agg = LoraAggregation.Svd(updates, s, R);
        var approx = agg.Layers["layer"].B.matmul(agg.Layers["layer"].A).mul(s).data<float>().ToArray();
        double err2 = 0;
        for (int i = 0; i < Out; i++) for (int j = 0; j < In; j++) err2 += Math.Pow(approx[i * In + j] - exact[i, j], 2);
        var gram = Mul(Transpose(exact), exact);
        double det = Det3(gram), trace = gram[0, 0] + gram[1, 1] + gram[2, 2];
        // eigenvalues of the Gram matrix are σ²; the smallest is a root of the characteristic cubic — bisection below the others
        double c2 = gram[0, 0] * gram[1, 1] - gram[0, 1] * gram[1, 0] + gram[0, 0] * gram[2, 2] - gram[0, 2] * gram[2, 0] + gram[1, 1] * gram[2, 2] - gram[1, 2] * gram[2, 1];
        double P(double x) => x * x * x - trace * x * x + c2 * x - det;
        double lo = 0, hi = trace;
        // the smallest root: P(0) = −det ≤ 0, and P rises to its first root; bisect on the first sign change of a fine scan
        double step = trace / 100000, x0 = 0;
        while (P(x0 + step) < 0) x0 += step;
        (lo, hi) = (x0, x0 + step);
        for (int it = 0; it < 60; it++) { double mid = (lo + hi) / 2; if (P(mid) < 0) lo = mid; else hi = mid; }
        Assert.Equal(lo, err2, 4);
    }

    static double[,] Transpose(double[,] m)
    {
        var t = new double[m.GetLength(1), m.GetLength(0)];
        for (int i = 0; i < m.GetLength(0); i++) for (int j = 0; j < m.GetLength(1); j++) t[j, i] = m[i, j];
        return t;
    }

    static double Det3(double[,] m) =>
        m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]) - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0]) + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]);

    [Fact]
    public void ClientLevelDpClipsEachUpdateToC()
    {
        var (updates, a, b, _) = Clients();
        var global = new LoraFactors(new() { ["layer"] = (zeros(R, In), zeros(Out, R)) });
        using var agg = new ClientLevelDp(0.1, 0).Aggregate(global, updates, onlyB: false);
        // no noise: the mean of the clipped updates, by hand
        var wantA = new double[R, In];
        var wantB = new double[Out, R];
        for (int k = 0; k < 3; k++)
        {
            double norm = Math.Sqrt(Math.Pow(Frobenius(a[k]), 2) + Math.Pow(Frobenius(b[k]), 2));
            double f = Math.Min(1, 0.1 / norm);
            for (int i = 0; i < R; i++) for (int j = 0; j < In; j++) wantA[i, j] += f * a[k][i, j] / 3;
            for (int i = 0; i < Out; i++) for (int j = 0; j < R; j++) wantB[i, j] += f * b[k][i, j] / 3;
        }
        AssertClose(wantA, agg.Layers["layer"].A);
        AssertClose(wantB, agg.Layers["layer"].B);
    }

    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";

    [Fact]
    public void SimulateRunsRoundsWritesPeftAdaptersAndRejectsAnEmptyClient()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, new NaiveGpt2Config { VocabSize = 1003, NEmbd = 16, NLayer = 1, NHead = 2, NPositions = 32 }, new TinyGpt2Options { Seed = 3 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        var clients = Path.Combine(dir, "clients");
        Directory.CreateDirectory(clients);
        File.WriteAllText(Path.Combine(clients, "lower.txt"), string.Concat(Enumerable.Repeat(Text.ToLowerInvariant(), 6)));
        File.WriteAllText(Path.Combine(clients, "upper.txt"), string.Concat(Enumerable.Repeat(Text.ToUpperInvariant(), 6)));
        string[] Args(string agg, string output) => ["federated", "simulate", "--model", dir, "--clients", clients, "--rounds", "2", "--clients-per-round", "2",
            "--local-steps", "1", "--aggregation", agg, "--out", output, "--seq-len", "16", "--batch-size", "2", "--r", "2", "--json"];

        foreach (var agg in new[] { "ffa-lora", "svd" })   // fedavg: the unit tests above; kept short
        {
            var output = Path.Combine(dir, "out-" + agg);
            var r = CliRunner.Run(Args(agg, output));
            Assert.True(r.ExitCode == 0, r.Stderr);
            var json = r.Json();
            Assert.Equal(2, json.GetProperty("eval_loss").GetArrayLength());
            Assert.True(File.Exists(Path.Combine(output, "round-2", "adapter_model.safetensors")));
            Assert.True(File.Exists(Path.Combine(output, "adapter_config.json")));
            Assert.True(File.Exists(Path.Combine(output, "loss.png")));
            long bytes = json.GetProperty("bytes_per_round")[0].GetInt64();
            // GPT-2 c_attn: A 2×16, B 48×2 floats; 2 clients up + 2 down; FFA-LoRA moves B only
            long perClient = agg == "ffa-lora" ? 48 * 2 * 4 : (2 * 16 + 48 * 2) * 4;
            Assert.Equal(4 * perClient, bytes);
            if (agg == "ffa-lora") Assert.True(json.GetProperty("fedavg_inexactness")[0].GetDouble() < 1e-6);
        }

        File.WriteAllText(Path.Combine(clients, "empty.txt"), "");
        Assert.Contains("empty.txt", CliRunner.AssertUserError(CliRunner.Run(Args("fedavg", Path.Combine(dir, "out-bad")))));
    }
}
