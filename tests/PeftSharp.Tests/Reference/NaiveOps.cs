namespace PeftSharp.Tests.Reference;

/// <summary>
/// The building blocks of the naive reference models, written as plain loops over double arrays so each one can be
/// checked by hand (see ReferenceSelfTests). Weights come in as float[] (what is on disk); all arithmetic is double.
/// Vectors are double[]; a sequence of vectors is double[][] indexed [position][feature].
/// </summary>
public static class NaiveOps
{
    /// <summary>nn.Linear: W stored [out, in] row-major; y[o] = Σ_i x[i]·W[o, i] + b[o].</summary>
    public static double[] Linear(double[] x, float[] weight, float[]? bias, int inDim, int outDim)
    {
        Check(x.Length == inDim, $"Linear: input has {x.Length} features, expected {inDim}");
        Check(weight.Length == inDim * outDim, $"Linear: weight has {weight.Length} values, expected {outDim}x{inDim}");
        Check(bias is null || bias.Length == outDim, "Linear: bias length mismatch");
        var y = new double[outDim];
        for (int o = 0; o < outDim; o++)
        {
            double sum = bias is null ? 0.0 : bias[o];
            for (int i = 0; i < inDim; i++)
                sum += x[i] * weight[o * inDim + i];
            y[o] = sum;
        }
        return y;
    }

    /// <summary>GPT-2 Conv1D: W stored [in, out] row-major; y[o] = Σ_i x[i]·W[i, o] + b[o] (i.e. y = x @ W + b).</summary>
    public static double[] Conv1D(double[] x, float[] weight, float[]? bias, int inDim, int outDim)
    {
        Check(x.Length == inDim, $"Conv1D: input has {x.Length} features, expected {inDim}");
        Check(weight.Length == inDim * outDim, $"Conv1D: weight has {weight.Length} values, expected {inDim}x{outDim}");
        Check(bias is null || bias.Length == outDim, "Conv1D: bias length mismatch");
        var y = new double[outDim];
        for (int o = 0; o < outDim; o++)
        {
            double sum = bias is null ? 0.0 : bias[o];
            for (int i = 0; i < inDim; i++)
                sum += x[i] * weight[i * outDim + o];
            y[o] = sum;
        }
        return y;
    }

    /// <summary>nn.LayerNorm over the last dimension: (x − mean) / sqrt(var + eps) · w + b, var the biased (1/n) variance.</summary>
    public static double[] LayerNorm(double[] x, float[] weight, float[] bias, double eps)
    {
        int n = x.Length;
        Check(weight.Length == n && bias.Length == n, "LayerNorm: parameter length mismatch");
        double mean = 0;
        for (int i = 0; i < n; i++) mean += x[i];
        mean /= n;
        double variance = 0;
        for (int i = 0; i < n; i++) variance += (x[i] - mean) * (x[i] - mean);
        variance /= n;
        double inv = 1.0 / Math.Sqrt(variance + eps);
        var y = new double[n];
        for (int i = 0; i < n; i++)
            y[i] = (x[i] - mean) * inv * weight[i] + bias[i];
        return y;
    }

    /// <summary>Llama RMSNorm: x · rsqrt(mean(x²) + eps) · w (no mean subtraction, no bias).</summary>
    public static double[] RmsNorm(double[] x, float[] weight, double eps)
    {
        int n = x.Length;
        Check(weight.Length == n, "RmsNorm: weight length mismatch");
        double meanSquare = 0;
        for (int i = 0; i < n; i++) meanSquare += x[i] * x[i];
        meanSquare /= n;
        double inv = 1.0 / Math.Sqrt(meanSquare + eps);
        var y = new double[n];
        for (int i = 0; i < n; i++)
            y[i] = x[i] * inv * weight[i];
        return y;
    }

    /// <summary>GPT-2's "gelu_new" (tanh approximation): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
    public static double GeluNew(double x)
        => 0.5 * x * (1.0 + Math.Tanh(Math.Sqrt(2.0 / Math.PI) * (x + 0.044715 * x * x * x)));

    /// <summary>SiLU / swish: x·σ(x) = x / (1 + e^−x).</summary>
    public static double Silu(double x) => x / (1.0 + Math.Exp(-x));

    /// <summary>Numerically stable softmax (max subtracted) over a vector.</summary>
    public static double[] Softmax(double[] scores)
    {
        double max = double.NegativeInfinity;
        foreach (double s in scores) max = Math.Max(max, s);
        var p = new double[scores.Length];
        double sum = 0;
        for (int i = 0; i < scores.Length; i++)
        {
            p[i] = Math.Exp(scores[i] - max);
            sum += p[i];
        }
        for (int i = 0; i < p.Length; i++) p[i] /= sum;
        return p;
    }

    /// <summary>log Σ exp(x), computed stably in double.</summary>
    public static double LogSumExp(ReadOnlySpan<double> x)
    {
        double max = double.NegativeInfinity;
        foreach (double v in x) max = Math.Max(max, v);
        if (double.IsNegativeInfinity(max)) return max;
        double sum = 0;
        foreach (double v in x) sum += Math.Exp(v - max);
        return max + Math.Log(sum);
    }

    /// <summary>
    /// Causal scaled-dot-product attention for ONE head. q, k, v are [T][headDim]. Position t attends to
    /// positions 0..t (inclusive) with weights softmax(q_t·k_s · scale); masked positions get probability 0.
    /// </summary>
    public static double[][] CausalAttention(double[][] q, double[][] k, double[][] v, double scale)
    {
        int t = q.Length;
        Check(k.Length == t && v.Length == t, "CausalAttention: q, k, v lengths differ");
        var output = new double[t][];
        for (int i = 0; i < t; i++)
        {
            var scores = new double[i + 1]; // only the unmasked keys 0..i
            for (int j = 0; j <= i; j++)
                scores[j] = Dot(q[i], k[j]) * scale;
            double[] p = Softmax(scores);
            var o = new double[v[0].Length];
            for (int j = 0; j <= i; j++)
                for (int d = 0; d < o.Length; d++)
                    o[d] += p[j] * v[j][d];
            output[i] = o;
        }
        return output;
    }

    public static double Dot(double[] a, double[] b)
    {
        Check(a.Length == b.Length, "Dot: length mismatch");
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    // ---------------------------------------------------------------- RoPE

    /// <summary>Default RoPE inverse frequencies: inv_freq[i] = 1 / theta^(2i / dim), i = 0 .. dim/2 − 1.</summary>
    public static double[] RopeInvFreq(int dim, double theta)
    {
        Check(dim % 2 == 0, "RoPE dimension must be even");
        var inv = new double[dim / 2];
        for (int i = 0; i < dim / 2; i++)
            inv[i] = 1.0 / Math.Pow(theta, 2.0 * i / dim);
        return inv;
    }

    /// <summary>
    /// The "llama3" rope_scaling adjustment of inverse frequencies (transformers' _compute_llama3_parameters),
    /// with wavelen = 2π / inv_freq, lowWavelen = originalMax / lowFreqFactor, highWavelen = originalMax / highFreqFactor:
    /// wavelen &lt; highWavelen → unchanged; wavelen &gt; lowWavelen → inv_freq / factor; otherwise (medium, both
    /// bounds inclusive) smooth = (originalMax / wavelen − lowFreqFactor) / (highFreqFactor − lowFreqFactor) and
    /// inv_freq ← (1 − smooth)·inv_freq / factor + smooth·inv_freq. The attention scaling factor stays 1.
    /// </summary>
    public static double[] Llama3ScaleInvFreq(double[] invFreq, double factor, double lowFreqFactor, double highFreqFactor,
        double originalMaxPositionEmbeddings)
    {
        double lowFreqWavelen = originalMaxPositionEmbeddings / lowFreqFactor;
        double highFreqWavelen = originalMaxPositionEmbeddings / highFreqFactor;
        var result = new double[invFreq.Length];
        for (int i = 0; i < invFreq.Length; i++)
        {
            double wavelen = 2 * Math.PI / invFreq[i];
            if (wavelen < highFreqWavelen)
                result[i] = invFreq[i];
            else if (wavelen > lowFreqWavelen)
                result[i] = invFreq[i] / factor;
            else
            {
                double smooth = (originalMaxPositionEmbeddings / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
                result[i] = (1 - smooth) * invFreq[i] / factor + smooth * invFreq[i];
            }
        }
        return result;
    }

    /// <summary>
    /// Rotary embedding in the "rotate_half" (GPT-NeoX / HF Llama) convention for one head vector x of length d
    /// at integer position p: for i &lt; d/2 the pair (x[i], x[i + d/2]) is rotated by angle p·inv_freq[i]:
    /// out[i] = x[i]·cos − x[i+d/2]·sin, out[i+d/2] = x[i+d/2]·cos + x[i]·sin.
    /// (This is x·cos(emb) + rotate_half(x)·sin(emb) with emb = cat(freqs, freqs), rotate_half(x) = cat(−x₂, x₁).)
    /// </summary>
    public static double[] ApplyRope(double[] x, int position, double[] invFreq)
    {
        int half = x.Length / 2;
        Check(x.Length % 2 == 0 && invFreq.Length == half, "ApplyRope: head dim / inv_freq length mismatch");
        var y = new double[x.Length];
        for (int i = 0; i < half; i++)
        {
            double angle = position * invFreq[i];
            double cos = Math.Cos(angle), sin = Math.Sin(angle);
            y[i] = x[i] * cos - x[i + half] * sin;
            y[i + half] = x[i + half] * cos + x[i] * sin;
        }
        return y;
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>Copies features [start, start + length) of a vector.</summary>
    public static double[] Slice(double[] x, int start, int length)
    {
        var y = new double[length];
        Array.Copy(x, start, y, 0, length);
        return y;
    }

    public static double[] Add(double[] a, double[] b)
    {
        Check(a.Length == b.Length, "Add: length mismatch");
        var y = new double[a.Length];
        for (int i = 0; i < a.Length; i++) y[i] = a[i] + b[i];
        return y;
    }

    /// <summary>Row <paramref name="row"/> of a [rows, cols] row-major float matrix, widened to double.</summary>
    public static double[] Row(float[] matrix, int row, int cols)
    {
        var y = new double[cols];
        for (int i = 0; i < cols; i++) y[i] = matrix[row * cols + i];
        return y;
    }

    public static float[,] ToFloat(double[,] x)
    {
        var y = new float[x.GetLength(0), x.GetLength(1)];
        for (int i = 0; i < x.GetLength(0); i++)
            for (int j = 0; j < x.GetLength(1); j++)
                y[i, j] = (float)x[i, j];
        return y;
    }

    public static double[,] ToMatrix(double[][] rows)
    {
        int cols = rows.Length == 0 ? 0 : rows[0].Length;
        var m = new double[rows.Length, cols];
        for (int i = 0; i < rows.Length; i++)
            for (int j = 0; j < cols; j++)
                m[i, j] = rows[i][j];
        return m;
    }

    internal static void Check(bool condition, string message)
    {
        if (!condition) throw new ArgumentException(message);
    }
}
