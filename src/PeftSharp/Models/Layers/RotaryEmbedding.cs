using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>
/// Rotary position embeddings as transformers applies them (rotate_half layout: the first and second
/// halves of each head are the two coordinates of each rotated pair).
/// </summary>
public sealed class RotaryEmbedding
{
    readonly double[] invFreq;

    /// <summary>
    /// Inverse frequencies 1 / θ^(2i/head_dim) for i below head_dim/2, adjusted by <paramref name="scaling"/> (linear or llama3) when given.
    /// </summary>
    public RotaryEmbedding(int headDim, double theta, RopeScaling? scaling)
    {
        invFreq = new double[headDim / 2];
        for (int i = 0; i < invFreq.Length; i++)
            invFreq[i] = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
        if (scaling is not null) ApplyScaling(invFreq, scaling);
    }

    /// <summary>The head_dim/2 inverse frequencies, after any scaling.</summary>
    public IReadOnlyList<double> InverseFrequencies => invFreq;

    static void ApplyScaling(double[] invFreq, RopeScaling s)
    {
        switch (s.Type)
        {
            case "linear":
                for (int i = 0; i < invFreq.Length; i++) invFreq[i] /= s.Factor;
                break;
            case "llama3":
                // Llama 3.1: keep high frequencies, divide low ones by `factor`, interpolate between.
                double lowFreqWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
                double highFreqWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
                for (int i = 0; i < invFreq.Length; i++)
                {
                    double wavelen = 2 * Math.PI / invFreq[i];
                    if (wavelen < highFreqWavelen) continue;
                    if (wavelen > lowFreqWavelen) { invFreq[i] /= s.Factor; continue; }
                    double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    invFreq[i] = (1 - smooth) * invFreq[i] / s.Factor + smooth * invFreq[i];
                }
                break;
        }
    }

    /// <summary>cos and sin tables [T, headDim] for positions offset..offset+T-1, computed in float32 then cast to dtype.</summary>
    public (Tensor cos, Tensor sin) Tables(long offset, long length, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var inv = tensor(invFreq.Select(f => (float)f).ToArray(), device: device);
        var pos = arange(offset, offset + length, 1, ScalarType.Float32, device);
        var freqs = outer(pos, inv);
        var emb = cat([freqs, freqs], -1);
        var cos = emb.cos().to_type(dtype);
        var sin = emb.sin().to_type(dtype);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// cos and sin tables [B, 1, T, headDim] for per-row positions [B, T] (rows of different lengths in one batch),
    /// computed in float32 then cast to dtype; they broadcast over the heads of [B, H, T, D].
    /// </summary>
    public (Tensor cos, Tensor sin) Tables(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var inv = tensor(invFreq.Select(f => (float)f).ToArray(), device: positions.device);
        var freqs = positions.to_type(ScalarType.Float32).unsqueeze(-1).mul(inv); // [B, T, D/2]
        var emb = cat([freqs, freqs], -1).unsqueeze(1);
        var cos = emb.cos().to_type(dtype);
        var sin = emb.sin().to_type(dtype);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>x·cos + rotate_half(x)·sin for x [B, H, T, D] and tables [T, D] (or [B, 1, T, D]).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([x2.neg(), x1], -1);
        return x.mul(cos).add_(rotated.mul_(sin)).MoveToOuterDisposeScope();
    }
}
