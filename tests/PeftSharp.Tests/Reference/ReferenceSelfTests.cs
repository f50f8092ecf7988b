using System.Text;
using System.Text.Json;

namespace PeftSharp.Tests.Reference;

/// <summary>
/// Checks of the naive reference itself against facts computed by hand, so that the reference can fail on its own
/// (and is not merely "whatever the library does").
/// </summary>
public class ReferenceSelfTests
{
    private const double Tight = 1e-12;

    private static void Close(double expected, double actual, double tol = Tight)
        => Assert.True(Math.Abs(expected - actual) <= tol * Math.Max(1.0, Math.Abs(expected)),
            $"expected {expected:R}, got {actual:R}");

    private static void AllClose(double[] expected, double[] actual, double tol = Tight)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Close(expected[i], actual[i], tol);
    }

    private static double[] Row(double[,] m, int r) => Enumerable.Range(0, m.GetLength(1)).Select(c => m[r, c]).ToArray();

    private static double MaxAbsDiff(double[,] a, double[,] b)
    {
        Assert.Equal(a.GetLength(0), b.GetLength(0));
        Assert.Equal(a.GetLength(1), b.GetLength(1));
        double max = 0;
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < a.GetLength(1); j++)
                max = Math.Max(max, Math.Abs(a[i, j] - b[i, j]));
        return max;
    }

    // ================================================================= bf16 and safetensors

    [Theory]
    [InlineData(1.0f, 0x3F80)]
    [InlineData(-2.0f, 0xC000)]
    [InlineData(3.14159f, 0x4049)]     // 0x40490FD0: lower half < 0x8000 → truncates
    [InlineData(1.00390625f, 0x3F80)]  // 0x3F808000: exact tie, 0x3F80 is even → stays
    [InlineData(1.01171875f, 0x3F82)]  // 0x3F818000: exact tie, 0x3F81 is odd → rounds up to even
    [InlineData(1.005859375f, 0x3F81)] // 0x3F80C000: above the tie → rounds up
    public void Bf16RoundsToNearestEven(float value, int expectedBits)
    {
        Assert.Equal((ushort)expectedBits, NaiveSafetensors.ToBf16Bits(value));
    }

    [Fact]
    public void Bf16RoundTripAndNaN()
    {
        Assert.Equal(1.0f, NaiveSafetensors.FromBf16Bits(0x3F80));
        Assert.Equal(3.140625f, NaiveSafetensors.RoundToBf16(3.14159f));
        Assert.Equal(1.015625f, NaiveSafetensors.RoundToBf16(1.01171875f));
        Assert.True(float.IsNaN(NaiveSafetensors.RoundToBf16(float.NaN)));
        Assert.Equal(float.PositiveInfinity, NaiveSafetensors.RoundToBf16(float.MaxValue)); // rounds past the largest bf16
    }

    [Fact]
    public void SafetensorsBytesMatchHandWrittenFile()
    {
        byte[] actual = NaiveSafetensors.Serialize([new NaiveTensor("a", NaiveDType.F32, [2], [1.0f, -2.0f])]);

        // 85-byte header, padded with 3 spaces to 88 so the data starts at offset 96 (a multiple of 8).
        string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\":{\"format\":\"pt\"}}   ";
        var expected = new List<byte> { 88, 0, 0, 0, 0, 0, 0, 0 };
        expected.AddRange(Encoding.ASCII.GetBytes(header));
        expected.AddRange(new byte[] { 0x00, 0x00, 0x80, 0x3F }); // 1.0f little-endian
        expected.AddRange(new byte[] { 0x00, 0x00, 0x00, 0xC0 }); // -2.0f little-endian
        Assert.Equal(expected.ToArray(), actual);
    }

    [Fact]
    public void SafetensorsBf16BytesAndRoundTrip()
    {
        byte[] bytes = NaiveSafetensors.Serialize(
        [
            new NaiveTensor("w", NaiveDType.BF16, [1, 2], [1.0f, 3.14159f]),
            new NaiveTensor("s", NaiveDType.F32, [], [0.5f]),
        ]);
        int n = (int)BitConverter.ToUInt64(bytes, 0);
        Assert.Equal(0, (8 + n) % 8);
        Assert.Equal(new byte[] { 0x80, 0x3F, 0x49, 0x40, 0x00, 0x00, 0x00, 0x3F }, bytes[(8 + n)..]);

        var read = NaiveSafetensors.Parse(bytes, out var metadata);
        Assert.Equal("pt", metadata["format"]);
        Assert.Equal(new[] { 1.0f, 3.140625f }, read["w"].Values);
        Assert.Equal(new[] { 1, 2 }, read["w"].Shape);
        Assert.Empty(read["s"].Shape);
        Assert.Equal(new[] { 0.5f }, read["s"].Values);
    }

    // ================================================================= small ops by hand

    [Fact]
    public void LinearAndConv1DOrientation()
    {
        // W as nn.Linear [out=3, in=2]: y = x Wᵀ + b
        float[] linear = [1, 2, 3, 4, 5, 6];
        AllClose([1 * 1 + 10 * 2 + 0.5, 1 * 3 + 10 * 4, 1 * 5 + 10 * 6 - 1], NaiveOps.Linear([1, 10], linear, [0.5f, 0, -1], 2, 3));
        // W as Conv1D [in=2, out=3]: y = x W + b
        float[] conv = [1, 2, 3, 4, 5, 6];
        AllClose([1 * 1 + 10 * 4, 1 * 2 + 10 * 5, 1 * 3 + 10 * 6], NaiveOps.Conv1D([1, 10], conv, null, 2, 3));
    }

    [Fact]
    public void NormsByHand()
    {
        // LayerNorm of [1,2,3,4]: mean 2.5, variance 1.25 (biased)
        double inv = 1 / Math.Sqrt(1.25 + 1e-5);
        AllClose([-1.5 * inv, -0.5 * inv * 2 + 1, 0.5 * inv, 1.5 * inv],
            NaiveOps.LayerNorm([1, 2, 3, 4], [1, 2, 1, 1], [0, 1, 0, 0], 1e-5));
        // RMSNorm of [3,4]: mean square 12.5, no centring
        double r = Math.Sqrt(12.5);
        AllClose([3 / r, 2 * 4 / r], NaiveOps.RmsNorm([3, 4], [1, 2], 0));
        AllClose([1 / Math.Sqrt(1 + 1e-6), 1 / Math.Sqrt(1 + 1e-6)], NaiveOps.RmsNorm([1, 1], [1, 1], 1e-6));
    }

    [Fact]
    public void ActivationsByHand()
    {
        Assert.Equal(0.0, NaiveOps.GeluNew(0.0));
        Close(0.8411919906082768, NaiveOps.GeluNew(1.0), 1e-15);
        Close(-0.15880800939172324, NaiveOps.GeluNew(-1.0), 1e-15);
        Close(1.954597694087775, NaiveOps.GeluNew(2.0), 1e-15);
        Close(0.7310585786300049, NaiveOps.Silu(1.0), 1e-15);
        Assert.Equal(0.0, NaiveOps.Silu(0.0));
    }

    [Fact]
    public void CausalAttentionByHand()
    {
        // one head, d = 1: position 0 sees only itself; position 1 mixes with softmax([q1·k0, q1·k1]·scale)
        double[][] q = [[1], [2]], k = [[1], [3]], v = [[10], [20]];
        double[][] o = NaiveOps.CausalAttention(q, k, v, 0.5);
        Close(10, o[0][0]);
        double p1 = 1 / (1 + Math.Exp(2 * 1 * 0.5 - 2 * 3 * 0.5)); // σ(s1 − s0)
        Close((1 - p1) * 10 + p1 * 20, o[1][0]);
    }

    // ================================================================= RoPE

    [Fact]
    public void RopeInvFreqByHand()
    {
        AllClose([1.0, 0.01], NaiveOps.RopeInvFreq(4, 10000));
        AllClose([1.0, Math.Pow(500000, -0.25), Math.Pow(500000, -0.5), Math.Pow(500000, -0.75)], NaiveOps.RopeInvFreq(8, 500000));
    }

    [Fact]
    public void RopeRotatesHalvesByHand()
    {
        double[] y = NaiveOps.ApplyRope([1, 2, 3, 4], 1, [1.0, 0.01]);
        double c1 = Math.Cos(1), s1 = Math.Sin(1), c2 = Math.Cos(0.01), s2 = Math.Sin(0.01);
        // pairs are (x0, x2) at frequency 1 and (x1, x3) at frequency 0.01 (rotate_half, not interleaved)
        AllClose([1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2], y);
    }

    [Fact]
    public void RopeIdentityAtZeroPreservesNormsAndIsRelative()
    {
        var rng = new Random(5);
        double[] inv = NaiveOps.RopeInvFreq(8, 10000);
        double[] q = Enumerable.Range(0, 8).Select(_ => rng.NextDouble() - 0.5).ToArray();
        double[] k = Enumerable.Range(0, 8).Select(_ => rng.NextDouble() - 0.5).ToArray();
        AllClose(q, NaiveOps.ApplyRope(q, 0, inv));
        for (int p = 1; p < 40; p += 7)
            Close(Math.Sqrt(NaiveOps.Dot(q, q)), Math.Sqrt(NaiveOps.Dot(NaiveOps.ApplyRope(q, p, inv), NaiveOps.ApplyRope(q, p, inv))));
        // ⟨R_m q, R_n k⟩ depends only on m − n
        double a = NaiveOps.Dot(NaiveOps.ApplyRope(q, 7, inv), NaiveOps.ApplyRope(k, 3, inv));
        double b = NaiveOps.Dot(NaiveOps.ApplyRope(q, 24, inv), NaiveOps.ApplyRope(k, 20, inv));
        Close(a, b, 1e-12);
        Assert.NotEqual(a, NaiveOps.Dot(q, k), 6);
    }

    [Fact]
    public void Llama3FrequencyBandsByHand()
    {
        // original 8192, low 1, high 4 → low-frequency wavelength 8192, high-frequency wavelength 2048
        double[] inv = [2 * Math.PI / 1000, 2 * Math.PI / 10000, 2 * Math.PI / 4096, 2 * Math.PI / 2048, 2 * Math.PI / 8192];
        double[] scaled = NaiveOps.Llama3ScaleInvFreq(inv, 8, 1, 4, 8192);
        Close(inv[0], scaled[0]);                 // short wavelength: unchanged
        Close(inv[1] / 8, scaled[1]);             // long wavelength: divided by factor
        Close(inv[2] * (2.0 / 24 + 8.0 / 24), scaled[2]); // smooth = (8192/4096 − 1)/3 = 1/3 → (2/3)/8 + 1/3
        Close(inv[3], scaled[3]);                 // boundary 2048 is "medium" with smooth = 1 → unchanged
        Close(inv[4] / 8, scaled[4]);             // boundary 8192 is "medium" with smooth = 0 → divided
    }

    // ================================================================= scoring

    [Fact]
    public void NllOfUniformAndKnownLogits()
    {
        var uniform = new float[3, 7];
        Close(Math.Log(7), NaiveScoring.MeanNll(uniform, [0, 3, 6]));

        var l = new float[2, 2] { { 0, (float)Math.Log(3) }, { 0, 0 } };
        Close(Math.Log(4.0 / 3), NaiveScoring.MeanNll(l, [0, 1]), 1e-7);
        Close(Math.Log(4.0), NaiveScoring.MeanNll(l, [1, 0]), 1e-7);

        var big = new float[2, 2] { { 1000, 0 }, { 0, 0 } };
        Close(1000, NaiveScoring.MeanNll(big, [0, 1]));
        Close(0, NaiveScoring.MeanNll(big, [0, 0]));
        Assert.True(double.IsNaN(NaiveScoring.MeanNll(new float[1, 2], [0])));
    }

    [Fact]
    public void WindowsOverlapByOneTokenSoEveryTokenIsPredictedOnce()
    {
        Assert.Equal(new[] { (0, 4), (3, 4), (6, 4) }, NaiveScoring.Windows(10, 4));
        Assert.Equal(new[] { (0, 4), (3, 4), (6, 3) }, NaiveScoring.Windows(9, 4));
        Assert.Equal(new[] { (0, 4), (3, 2) }, NaiveScoring.Windows(5, 4));
        Assert.Equal(new[] { (0, 4) }, NaiveScoring.Windows(4, 4));
        Assert.Equal(new[] { (0, 3) }, NaiveScoring.Windows(3, 4));
    }

    [Fact]
    public void WindowedNllPredictsEveryTokenAfterTheFirstOnce()
    {
        int[] ids = Enumerable.Range(0, 10).ToArray();
        var calls = new List<int[]>();
        // V = 2; every row is [0, n] for a window of n tokens, and the target is id % 2, so the per-token NLL is
        // log(1 + e^n) for even targets and log(1 + e^−n) for odd targets.
        float[,] Fake(int[] window)
        {
            calls.Add(window);
            var l = new float[window.Length, 2];
            for (int t = 0; t < window.Length; t++) l[t, 1] = window.Length;
            return l;
        }
        var (predicted, mean) = NaiveScoring.WindowedMeanNll(ids.Select(i => i % 2).ToArray(), 4, Fake);
        Assert.Equal(9, predicted);
        Assert.Equal(3, calls.Count);
        Assert.Equal(new[] { 0, 1, 0, 1 }, calls[0]);
        Assert.Equal(new[] { 1, 0, 1, 0 }, calls[1]);
        Assert.Equal(new[] { 0, 1, 0, 1 }, calls[2]);
        double e4 = Math.Log(1 + Math.Exp(4)), m4 = Math.Log(1 + Math.Exp(-4));
        // windows predict targets (1,0,1), (0,1,0), (1,0,1): every token after the first, once
        Close((5 * m4 + 4 * e4) / 9, mean);

        calls.Clear();
        var (p9, _) = NaiveScoring.WindowedMeanNll(new int[9], 4, Fake);
        Assert.Equal(8, p9);
        Assert.Equal(3, calls.Count);
        Assert.Equal(3, calls[2].Length);
        var (p1, m1) = NaiveScoring.WindowedMeanNll([0], 4, Fake);
        Assert.Equal(0, p1);
        Assert.True(double.IsNaN(m1));
    }

    // ================================================================= GPT-2 by hand

    private static Dictionary<string, float[]> ZeroGpt2(NaiveGpt2Config c)
    {
        var w = new Dictionary<string, float[]>();
        foreach (var (name, shape) in TinyCheckpoints.Gpt2Layout(c))
            w[name] = new float[shape.Aggregate(1, (a, d) => a * d)];
        foreach (var name in w.Keys.Where(k => k.Contains("ln_") && k.EndsWith(".weight")).ToList())
            Array.Fill(w[name], 1f);
        return w;
    }

    // wte rows with zero mean, so LayerNorm only rescales them
    private static readonly float[] Gpt2Wte = [1, -1, 1, -1, /**/ 2, 0, 0, -2, /**/ 0.5f, 0.5f, -0.5f, -0.5f];

    [Fact]
    public void Gpt2WithOnlyEmbeddingsGivesWteDotLayerNorm()
    {
        var c = new NaiveGpt2Config { VocabSize = 3, NEmbd = 4, NHead = 2, NLayer = 1, NPositions = 8 };
        var w = ZeroGpt2(c);
        w["transformer.wte.weight"] = Gpt2Wte;
        double[,] logits = new NaiveGpt2(c, w).LogitsDouble([0, 1, 2, 1]);
        // attention and MLP output 0 (zero weights and biases), so logits[t] = wte · LN(wte[id_t]) = (wte·r)/sqrt(var(r)+eps)
        double s0 = Math.Sqrt(1 + 1e-5), s1 = Math.Sqrt(2 + 1e-5), s2 = Math.Sqrt(0.25 + 1e-5);
        AllClose([4 / s0, 4 / s0, 0 / s0], Row(logits, 0));
        AllClose([4 / s1, 8 / s1, 2 / s1], Row(logits, 1));
        AllClose([0 / s2, 2 / s2, 1 / s2], Row(logits, 2));
        AllClose([4 / s1, 8 / s1, 2 / s1], Row(logits, 3));
    }

    [Fact]
    public void Gpt2AttentionScaleIsOneOverSqrtHeadDim()
    {
        var c = new NaiveGpt2Config { VocabSize = 2, NEmbd = 4, NHead = 2, NLayer = 1, NPositions = 8 };
        var w = ZeroGpt2(c);
        float[] r0 = [1, -1, 1, -1], r1 = [1, 1, -1, -1];
        w["transformer.wte.weight"] = [.. r0, .. r1];
        const double cq = 3;
        float[] bq = [0.5f, -0.25f, 0, 1];
        var cAttn = new float[4 * 12]; // Conv1D [in=4, out=12]: q = 3·x + bq, k = x, v = x
        for (int i = 0; i < 4; i++) { cAttn[i * 12 + i] = (float)cq; cAttn[i * 12 + 4 + i] = 1; cAttn[i * 12 + 8 + i] = 1; }
        w["transformer.h.0.attn.c_attn.weight"] = cAttn;
        w["transformer.h.0.attn.c_attn.bias"] = [.. bq, 0, 0, 0, 0, 0, 0, 0, 0];
        var cProj = new float[16];
        for (int i = 0; i < 4; i++) cProj[i * 4 + i] = 1;
        w["transformer.h.0.attn.c_proj.weight"] = cProj;

        double[,] logits = new NaiveGpt2(c, w).LogitsDouble([0, 1]);

        double s = Math.Sqrt(1 + 1e-5); // LN(r) = r / s for both rows (zero mean, unit variance)
        double[] n0 = r0.Select(x => x / s).ToArray(), n1 = r1.Select(x => x / s).ToArray();
        // Position 0 attends only to itself: output v0 = n0. Position 1, head h (features 2h, 2h+1):
        // scores (q1·k0, q1·k1) / √2 with q1 = 3·n1 + bq, k = n, then mixes v0 = n0 and v1 = n1.
        double[] h0 = new double[4], h1 = new double[4];
        for (int head = 0; head < 2; head++)
        {
            double s0 = 0, s1 = 0;
            for (int d = 2 * head; d < 2 * head + 2; d++)
            {
                double q1 = cq * n1[d] + bq[d];
                s0 += q1 * n0[d];
                s1 += q1 * n1[d];
            }
            double p1 = 1 / (1 + Math.Exp(-(s1 - s0) / Math.Sqrt(2)));
            for (int d = 2 * head; d < 2 * head + 2; d++)
            {
                h0[d] = r0[d] + n0[d];
                h1[d] = r1[d] + (1 - p1) * n0[d] + p1 * n1[d];
            }
        }
        double[] ExpectedLogits(double[] h)
        {
            double mean = h.Average();
            double variance = h.Select(x => (x - mean) * (x - mean)).Average();
            double[] n = h.Select(x => (x - mean) / Math.Sqrt(variance + 1e-5)).ToArray();
            return [NaiveOps.Dot(n, r0.Select(x => (double)x).ToArray()), NaiveOps.Dot(n, r1.Select(x => (double)x).ToArray())];
        }
        AllClose(ExpectedLogits(h0), Row(logits, 0));
        AllClose(ExpectedLogits(h1), Row(logits, 1));
    }

    [Fact]
    public void Gpt2MlpWiringByHand()
    {
        // 2 layers so HiddenStates[1] is the raw output of block 0 (before ln_f)
        var c = new NaiveGpt2Config { VocabSize = 1, NEmbd = 4, NHead = 1, NLayer = 2, NPositions = 4, NInner = 4 };
        var w = ZeroGpt2(c);
        float[] r = [3, 1, -1, -3]; // mean 0, variance 5
        w["transformer.wte.weight"] = r;
        w["transformer.wpe.weight"] = new float[16];
        var fc = new float[16];
        for (int i = 0; i < 4; i++) fc[i * 4 + (i + 1) % 4] = 1; // Conv1D [in, out]: out[(i+1)%4] = in[i]
        w["transformer.h.0.mlp.c_fc.weight"] = fc;
        var proj = new float[16];
        for (int i = 0; i < 4; i++) proj[i * 4 + i] = 2;
        w["transformer.h.0.mlp.c_proj.weight"] = proj;
        w["transformer.h.0.mlp.c_proj.bias"] = [0, 0, 0, 0.25f];

        var hs = new NaiveGpt2(c, w).HiddenStates([0]);
        Assert.Equal(3, hs.Count);
        double sd = Math.Sqrt(5 + 1e-5);
        double[] expected = new double[4];
        for (int o = 0; o < 4; o++)
            expected[o] = r[o] + 2 * NaiveOps.GeluNew(r[(o + 3) % 4] / sd) + (o == 3 ? 0.25 : 0);
        AllClose(r.Select(x => (double)x).ToArray(), Row(hs[0], 0));
        AllClose(expected, Row(hs[1], 0));
    }

    [Fact]
    public void Gpt2AddsPositionEmbeddings()
    {
        var c = new NaiveGpt2Config { VocabSize = 10, NEmbd = 8, NHead = 2, NLayer = 1, NPositions = 6 };
        var w = TinyCheckpoints.RandomGpt2Weights(c, new TinyGpt2Options { Seed = 3 });
        var h0 = new NaiveGpt2(c, w).HiddenStates([4, 9, 4])[0];
        for (int t = 0; t < 3; t++)
            for (int i = 0; i < 8; i++)
                Close(w["transformer.wte.weight"][new[] { 4, 9, 4 }[t] * 8 + i] + (double)w["transformer.wpe.weight"][t * 8 + i], h0[t, i]);
        Assert.Throws<ArgumentException>(() => new NaiveGpt2(c, w).Logits([1, 2, 3, 4, 5, 6, 7]));
    }

    // ================================================================= Llama by hand

    private static Dictionary<string, float[]> ZeroLlama(NaiveLlamaConfig c)
    {
        var w = new Dictionary<string, float[]>();
        foreach (var (name, shape) in TinyCheckpoints.LlamaLayout(c))
            w[name] = new float[shape.Aggregate(1, (a, d) => a * d)];
        foreach (var name in w.Keys.Where(k => k.EndsWith("norm.weight")).ToList())
            Array.Fill(w[name], 1f);
        return w;
    }

    [Fact]
    public void LlamaWithOnlyEmbeddingsGivesEmbedDotRmsNorm()
    {
        var c = new NaiveLlamaConfig
        {
            VocabSize = 4, HiddenSize = 4, IntermediateSize = 8, NumHiddenLayers = 1,
            NumAttentionHeads = 2, NumKeyValueHeads = 1, RmsNormEps = 1e-5, TieWordEmbeddings = true,
        };
        var w = ZeroLlama(c);
        w["model.embed_tokens.weight"] = [.. Gpt2Wte, 1, 1, 1, 1]; // last row has non-zero mean: RMSNorm keeps it
        double[,] logits = new NaiveLlama(c, w).LogitsDouble([0, 1, 2, 3]);
        double s0 = Math.Sqrt(1 + 1e-5), s1 = Math.Sqrt(2 + 1e-5), s2 = Math.Sqrt(0.25 + 1e-5), s3 = Math.Sqrt(1 + 1e-5);
        AllClose([4 / s0, 4 / s0, 0, 0], Row(logits, 0));
        AllClose([4 / s1, 8 / s1, 2 / s1, 0], Row(logits, 1));
        AllClose([0, 2 / s2, 1 / s2, 0], Row(logits, 2));
        AllClose([0, 0, 0, 4 / s3], Row(logits, 3));

        // untied with lm_head = a different matrix: logits follow lm_head, not embed
        var untied = c with { TieWordEmbeddings = false };
        var w2 = ZeroLlama(untied);
        w2["model.embed_tokens.weight"] = w["model.embed_tokens.weight"];
        w2["lm_head.weight"] = [1, 0, 0, 0, /**/ 0, 1, 0, 0, /**/ 0, 0, 1, 0, /**/ 0, 0, 0, 1];
        AllClose([2 / s1, 0, 0, -2 / s1], Row(new NaiveLlama(untied, w2).LogitsDouble([1]), 0));
    }

    [Fact]
    public void LlamaAttentionWithRopeByHand()
    {
        var c = new NaiveLlamaConfig
        {
            VocabSize = 2, HiddenSize = 2, IntermediateSize = 2, NumHiddenLayers = 1,
            NumAttentionHeads = 1, NumKeyValueHeads = 1, RmsNormEps = 0, TieWordEmbeddings = true, RopeTheta = 10000,
        };
        var w = ZeroLlama(c);
        float[] r0 = [1, 1], r1 = [1, -1]; // mean square 1: RMSNorm leaves them unchanged
        w["model.embed_tokens.weight"] = [.. r0, .. r1];
        const double cq = 2;
        w["model.layers.0.self_attn.q_proj.weight"] = [(float)cq, 0, 0, (float)cq];
        w["model.layers.0.self_attn.k_proj.weight"] = [1, 0, 0, 1];
        w["model.layers.0.self_attn.v_proj.weight"] = [1, 0, 0, 1];
        w["model.layers.0.self_attn.o_proj.weight"] = [1, 0, 0, 1];

        var model = new NaiveLlama(c, w);
        AllClose([1.0], model.InvFreq);
        double[,] logits = model.LogitsDouble([0, 1]);

        // head_dim 2, inv_freq [1]: position p rotates (x0, x1) by p radians.
        double cs = Math.Cos(1), sn = Math.Sin(1);
        double[] q1 = [cq * (cs + sn), cq * (-cs + sn)]; // R₁(cq·[1, −1])
        double[] k0 = [1, 1];                             // R₀([1, 1])
        double[] k1 = [cs + sn, -cs + sn];                // R₁([1, −1])
        double scale = 1 / Math.Sqrt(2);
        double[] p = NaiveOps.Softmax([NaiveOps.Dot(q1, k0) * scale, NaiveOps.Dot(q1, k1) * scale]);
        Close(2 * cq * sn * scale, NaiveOps.Dot(q1, k0) * scale); // the hand formula for the first score
        double[] h0 = [2, 2];                                     // r0 + v0
        double[] h1 = [1 + p[0] * 1 + p[1] * 1, -1 + p[0] * 1 + p[1] * -1];
        double[] Expected(double[] h)
        {
            double rms = Math.Sqrt((h[0] * h[0] + h[1] * h[1]) / 2);
            double[] n = [h[0] / rms, h[1] / rms];
            return [n[0] * r0[0] + n[1] * r0[1], n[0] * r1[0] + n[1] * r1[1]];
        }
        AllClose(Expected(h0), Row(logits, 0));
        AllClose(Expected(h1), Row(logits, 1));
    }

    [Fact]
    public void GroupedQueryAttentionEqualsMhaWithRepeatedKvHeads()
    {
        var gqa = new NaiveLlamaConfig
        {
            VocabSize = 16, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2,
            NumAttentionHeads = 4, NumKeyValueHeads = 2, AttentionBias = true,
        };
        var mha = gqa with { NumKeyValueHeads = 4 };
        var wg = TinyCheckpoints.RandomLlamaWeights(gqa, new TinyLlamaOptions { Seed = 11 });
        int hd = gqa.EffectiveHeadDim, hs = gqa.HiddenSize;

        // MHA weights: k/v head n is GQA kv head kvOf(n)
        Dictionary<string, float[]> Expand(Func<int, int> kvOf)
        {
            var wm = new Dictionary<string, float[]>(wg);
            for (int l = 0; l < gqa.NumHiddenLayers; l++)
                foreach (string proj in new[] { "k_proj", "v_proj" })
                {
                    string p = $"model.layers.{l}.self_attn.{proj}.";
                    float[] src = wg[p + "weight"], srcB = wg[p + "bias"];
                    var dst = new float[4 * hd * hs];
                    var dstB = new float[4 * hd];
                    for (int n = 0; n < 4; n++)
                    {
                        Array.Copy(src, kvOf(n) * hd * hs, dst, n * hd * hs, hd * hs);
                        Array.Copy(srcB, kvOf(n) * hd, dstB, n * hd, hd);
                    }
                    wm[p + "weight"] = dst;
                    wm[p + "bias"] = dstB;
                }
            return wm;
        }

        int[] ids = [3, 1, 4, 1, 5, 9, 2, 6];
        double[,] reference = new NaiveLlama(gqa, wg).LogitsDouble(ids);
        Assert.True(MaxAbsDiff(reference, new NaiveLlama(mha, Expand(n => n / 2)).LogitsDouble(ids)) < 1e-12);
        // the test has teeth: interleaving the kv heads the other way (n % 2) changes the result
        Assert.True(MaxAbsDiff(reference, new NaiveLlama(mha, Expand(n => n % 2)).LogitsDouble(ids)) > 1e-4);
    }

    [Fact]
    public void Llama3ScalingChangesOnlyLowFrequencies()
    {
        var c = new NaiveLlamaConfig { HiddenSize = 32, NumAttentionHeads = 2, NumKeyValueHeads = 1 }; // head_dim 16
        var scaled = c with { RopeScaling = new NaiveLlama3RopeScaling { Factor = 8, OriginalMaxPositionEmbeddings = 64 } };
        var w = TinyCheckpoints.RandomLlamaWeights(c);
        double[] plain = new NaiveLlama(c, w).InvFreq, adj = new NaiveLlama(scaled, w).InvFreq;
        // wavelengths 2π/inv: 6.3, 19.9, 62.8, 199, 628, ... with thresholds 16 (high) and 64 (low)
        Close(plain[0], adj[0]);
        double smooth = (64 / (2 * Math.PI / plain[1]) - 1) / 3;
        Close((1 - smooth) * plain[1] / 8 + smooth * plain[1], adj[1]);
        for (int i = 3; i < 8; i++) Close(plain[i] / 8, adj[i]);
    }

    // ================================================================= model properties

    public static IEnumerable<object[]> Models()
    {
        yield return ["gpt2"];
        yield return ["llama"];
        yield return ["mistral"];
        yield return ["qwen2"];
    }

    private static Func<int[], double[,]> RandomModel(string kind, int seed = 1)
    {
        if (kind == "gpt2")
        {
            var c = new NaiveGpt2Config { VocabSize = 20, NEmbd = 12, NHead = 3, NLayer = 2, NPositions = 16 };
            var m = new NaiveGpt2(c, TinyCheckpoints.RandomGpt2Weights(c, new TinyGpt2Options { Seed = seed }));
            return m.LogitsDouble;
        }
        var lc = new NaiveLlamaConfig { ModelType = kind, VocabSize = 20, HiddenSize = 16, NumAttentionHeads = 4, NumKeyValueHeads = 2 };
        var lm = new NaiveLlama(lc, TinyCheckpoints.RandomLlamaWeights(lc, new TinyLlamaOptions { Seed = seed }));
        return lm.LogitsDouble;
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void LogitsAreCausal(string kind)
    {
        var logits = RandomModel(kind);
        int[] a = [1, 2, 3, 4, 5, 6], b = [1, 2, 3, 17, 5, 6];
        double[,] la = logits(a), lb = logits(b);
        for (int t = 0; t < 3; t++)
            AllClose(Row(la, t), Row(lb, t), 0);
        for (int t = 3; t < 6; t++)
            Assert.True(Row(la, t).Zip(Row(lb, t)).Max(x => Math.Abs(x.First - x.Second)) > 1e-6);
        // and order matters: without position information, the last row of [7, 8, 7] and [8, 7, 7] would be equal
        // (same query token, same multiset of keys)
        double[,] x1 = logits([7, 8, 7]), x2 = logits([8, 7, 7]);
        Assert.True(Row(x1, 2).Zip(Row(x2, 2)).Max(x => Math.Abs(x.First - x.Second)) > 1e-6);
    }

    [Fact]
    public void PastOverloadsEqualFullForwardRows()
    {
        var gc = new NaiveGpt2Config { VocabSize = 20, NEmbd = 12, NHead = 3, NLayer = 2, NPositions = 16 };
        var g = new NaiveGpt2(gc, TinyCheckpoints.RandomGpt2Weights(gc));
        var full = g.LogitsDouble([5, 6, 7, 8, 9]);
        var tail = g.LogitsDouble([5, 6, 7], [8, 9]);
        for (int t = 0; t < 2; t++) AllClose(Row(full, 3 + t), Row(tail, t), 0);

        var lc = new NaiveLlamaConfig();
        var l = new NaiveLlama(lc, TinyCheckpoints.RandomLlamaWeights(lc));
        var lfull = l.LogitsDouble([5, 6, 7, 8, 9]);
        var ltail = l.LogitsDouble([5, 6], [7, 8, 9]);
        for (int t = 0; t < 3; t++) AllClose(Row(lfull, 2 + t), Row(ltail, t), 0);
    }

    // ================================================================= checkpoint builders

    [Fact]
    public void Gpt2CheckpointRoundTripsAndLooksLikeHf()
    {
        string dir = TinyCheckpoints.NewTempDirectory();
        try
        {
            var c = new NaiveGpt2Config { VocabSize = 11, NEmbd = 8, NHead = 2, NLayer = 2, NPositions = 5 };
            var ck = TinyCheckpoints.WriteGpt2(dir, c, new TinyGpt2Options { Seed = 4, IncludeAttnBiasBuffers = true, IncludeMaskedBias = true });
            var read = NaiveSafetensors.Read(ck.WeightsPath);
            Assert.Equal(ck.Weights.Keys.OrderBy(k => k), read.Keys.OrderBy(k => k));
            foreach (var (name, values) in ck.Weights)
            {
                Assert.Equal(values, read[name].Values);
                Assert.Equal(ck.Shapes[name], read[name].Shape);
            }
            Assert.Equal(new[] { 8, 24 }, ck.Shapes["transformer.h.0.attn.c_attn.weight"]);
            Assert.Equal(new[] { 32, 8 }, ck.Shapes["transformer.h.1.mlp.c_proj.weight"]);
            Assert.Equal(new[] { 1, 1, 5, 5 }, ck.Shapes["transformer.h.0.attn.bias"]);
            Assert.Empty(ck.Shapes["transformer.h.0.attn.masked_bias"]);
            Assert.Equal(new float[] { 1, 0, 0, 0, 0, 1, 1, 0, 0, 0 }, ck.Weights["transformer.h.1.attn.bias"][..10]);
            Assert.DoesNotContain(ck.Weights.Keys, k => k.Contains("lm_head"));
            Assert.All(ck.Weights["transformer.ln_f.weight"], x => Assert.InRange(x, 0.5f, 1.5f));

            Assert.Equal(File.ReadAllText(ck.ConfigPath), ck.ConfigJson);
            Assert.Contains("\n  \"layer_norm_epsilon\": 1e-05,\n", ck.ConfigJson);
            Assert.EndsWith("}\n", ck.ConfigJson);
            using var doc = JsonDocument.Parse(ck.ConfigJson);
            var root = doc.RootElement;
            Assert.Equal("gpt2", root.GetProperty("model_type").GetString());
            Assert.Equal("gelu_new", root.GetProperty("activation_function").GetString());
            Assert.Equal(8, root.GetProperty("n_embd").GetInt32());
            Assert.Equal(2, root.GetProperty("n_layer").GetInt32());
            Assert.Equal(2, root.GetProperty("n_head").GetInt32());
            Assert.Equal(5, root.GetProperty("n_positions").GetInt32());
            Assert.Equal(11, root.GetProperty("vocab_size").GetInt32());
            Assert.True(root.GetProperty("tie_word_embeddings").GetBoolean());
            Assert.Equal(JsonValueKind.Null, root.GetProperty("n_inner").ValueKind);
            var keys = root.EnumerateObject().Select(p => p.Name).ToList();
            Assert.Equal(keys.OrderBy(k => k, StringComparer.Ordinal), keys);

            // buffers do not change the model; the unprefixed layout (GPT2Model) gives the same logits
            var withPrefix = new NaiveGpt2(c, ck.Weights).LogitsDouble([1, 2, 3]);
            var bare = TinyCheckpoints.RandomGpt2Weights(c, new TinyGpt2Options { Seed = 4, TransformerPrefix = false });
            Assert.Contains("wte.weight", bare.Keys);
            Assert.Equal(0, MaxAbsDiff(withPrefix, new NaiveGpt2(c, bare).LogitsDouble([1, 2, 3])));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Bf16CheckpointStoresRoundedValues()
    {
        string dir = TinyCheckpoints.NewTempDirectory();
        try
        {
            var c = new NaiveLlamaConfig { ModelType = "qwen2", TieWordEmbeddings = true };
            var raw = TinyCheckpoints.RandomLlamaWeights(c, new TinyLlamaOptions { Seed = 2 });
            var ck = TinyCheckpoints.WriteLlama(dir, c, new TinyLlamaOptions { Seed = 2, DType = NaiveDType.BF16 });
            long elements = ck.Weights.Values.Sum(v => (long)v.Length);
            var bytes = File.ReadAllBytes(ck.WeightsPath);
            Assert.Equal(8 + (long)BitConverter.ToUInt64(bytes, 0) + 2 * elements, bytes.Length);
            var read = NaiveSafetensors.Read(ck.WeightsPath);
            foreach (var (name, values) in ck.Weights)
            {
                Assert.Equal(NaiveDType.BF16, read[name].DType);
                Assert.Equal(values, read[name].Values);
                Assert.Equal(NaiveSafetensors.RoundToBf16(raw[name]), values);
            }
            Assert.Contains("\"torch_dtype\": \"bfloat16\"", ck.ConfigJson);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void LlamaFamilyLayoutsFollowEachFamilysBiasRules()
    {
        var llama = new NaiveLlamaConfig { NumHiddenLayers = 1 };
        var names = TinyCheckpoints.LlamaLayout(llama).ToDictionary(x => x.Name, x => x.Shape);
        Assert.DoesNotContain(names.Keys, k => k.EndsWith(".bias"));
        Assert.Equal(new[] { 16, 16 }, names["model.layers.0.self_attn.q_proj.weight"]);
        Assert.Equal(new[] { 8, 16 }, names["model.layers.0.self_attn.k_proj.weight"]); // 2 kv heads × 4
        Assert.Equal(new[] { 32, 16 }, names["model.layers.0.mlp.gate_proj.weight"]);
        Assert.Equal(new[] { 16, 32 }, names["model.layers.0.mlp.down_proj.weight"]);
        Assert.Equal(new[] { 64, 16 }, names["lm_head.weight"]);

        var biased = TinyCheckpoints.LlamaLayout(llama with { AttentionBias = true, MlpBias = true }).Select(x => x.Name).ToList();
        Assert.Equal(7, biased.Count(k => k.EndsWith(".bias")));

        var qwen = TinyCheckpoints.LlamaLayout(llama with { ModelType = "qwen2", TieWordEmbeddings = true }).Select(x => x.Name).ToList();
        Assert.Equal(new[] { "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.k_proj.bias", "model.layers.0.self_attn.v_proj.bias" },
            qwen.Where(k => k.EndsWith(".bias")));
        Assert.DoesNotContain("lm_head.weight", qwen);

        Assert.DoesNotContain(TinyCheckpoints.LlamaLayout(llama with { ModelType = "mistral" }), x => x.Name.EndsWith(".bias"));
        Assert.Throws<ArgumentException>(() => TinyCheckpoints.LlamaLayout(llama with { ModelType = "mistral", AttentionBias = true }));

        // explicit head_dim different from hidden / heads
        var wide = TinyCheckpoints.LlamaLayout(llama with { HeadDim = 8 }).ToDictionary(x => x.Name, x => x.Shape);
        Assert.Equal(new[] { 32, 16 }, wide["model.layers.0.self_attn.q_proj.weight"]);
        Assert.Equal(new[] { 16, 32 }, wide["model.layers.0.self_attn.o_proj.weight"]);
    }

    [Fact]
    public void LlamaConfigJsonLooksLikeHf()
    {
        var c = new NaiveLlamaConfig
        {
            HeadDim = 8, RmsNormEps = 1e-5, RopeTheta = 500000,
            RopeScaling = new NaiveLlama3RopeScaling { Factor = 8, OriginalMaxPositionEmbeddings = 64 },
        };
        string json = TinyCheckpoints.LlamaConfigJson(c);
        Assert.Contains("\n  \"rms_norm_eps\": 1e-05,\n", json);
        Assert.Contains("\n  \"rope_theta\": 500000.0,\n", json);
        Assert.Contains("\n  \"rope_scaling\": {\n    \"factor\": 8.0,\n    \"high_freq_factor\": 4.0,\n    \"low_freq_factor\": 1.0,\n    \"original_max_position_embeddings\": 64,\n    \"rope_type\": \"llama3\"\n  },\n", json);
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        Assert.Equal("llama", root.GetProperty("model_type").GetString());
        Assert.Equal(8, root.GetProperty("head_dim").GetInt32());
        Assert.False(root.GetProperty("attention_bias").GetBoolean());
        Assert.False(root.GetProperty("tie_word_embeddings").GetBoolean());
        Assert.Equal("LlamaForCausalLM", root.GetProperty("architectures")[0].GetString());

        string plain = TinyCheckpoints.LlamaConfigJson(new NaiveLlamaConfig { ModelType = "qwen2" });
        Assert.DoesNotContain("head_dim", plain);
        Assert.DoesNotContain("attention_bias", plain);
        Assert.Contains("\"rope_scaling\": null", plain);
        Assert.Contains("\"use_sliding_window\": false", plain);
        Assert.Contains("\"rms_norm_eps\": 1e-06", plain);
        Assert.Contains("\"rope_theta\": 10000.0", plain);
    }

    [Theory]
    [InlineData(1e-5, "1e-05")]
    [InlineData(1e-6, "1e-06")]
    [InlineData(10000.0, "10000.0")]
    [InlineData(500000.0, "500000.0")]
    [InlineData(0.02, "0.02")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(2.5e-5, "2.5e-05")]
    [InlineData(1.5e-7, "1.5e-07")]
    [InlineData(123.456, "123.456")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(1e16, "1e+16")]
    [InlineData(-8.0, "-8.0")]
    [InlineData(0.0, "0.0")]
    public void FloatsAreWrittenLikePythonRepr(double value, string expected)
        => Assert.Equal(expected, PythonJson.FloatRepr(value));

    [Fact]
    public void BuildersAreDeterministicFromTheSeed()
    {
        var c = new NaiveLlamaConfig();
        var a = TinyCheckpoints.RandomLlamaWeights(c, new TinyLlamaOptions { Seed = 7 });
        var b = TinyCheckpoints.RandomLlamaWeights(c, new TinyLlamaOptions { Seed = 7 });
        var d = TinyCheckpoints.RandomLlamaWeights(c, new TinyLlamaOptions { Seed = 8 });
        foreach (var k in a.Keys) Assert.Equal(a[k], b[k]);
        Assert.NotEqual(a["model.embed_tokens.weight"], d["model.embed_tokens.weight"]);
        double mean = a["model.norm.weight"].Average(x => (double)x);
        Assert.InRange(mean, 0.9, 1.1);
    }
}
