using PeftSharp.Models;

namespace PeftSharp.Benchmarks;

/// <summary>
/// Matrix-multiply FLOPs one token really costs in a training step: forward 2 per weight, backward through
/// activations 2 per weight, weight gradients 2 per trained weight, plus attention (QKᵀ and A·V: 4·L·T·d forward,
/// twice that backward; counted without the causal half, as PaLM's MFU does). Norms, softmax and element-wise
/// work are not counted.
/// </summary>
public static class FlopCount
{
    /// <summary>Weights that take part in matrix multiplies per token: every Linear plus the vocabulary head.</summary>
    public static long MatmulWeights(ModelConfig c)
    {
        long d = c.Hidden, head = (long)c.Heads * c.HeadDim, kv = (long)c.KeyValueHeads * c.HeadDim, inner = c.Inner;
        long perLayer = c.IsGpt2
            ? d * 3 * d + d * d + 2 * d * inner
            : d * head + 2 * d * kv + head * d + 3 * d * inner;
        return c.Layers * perLayer + d * c.VocabSize;
    }

    /// <summary>
    /// Attention matrix-multiply FLOPs per token in the forward pass (QKᵀ and A·V): 4 · layers · <paramref name="seqLen"/> · heads · head_dim, without the causal half.
    /// </summary>
    public static double AttentionForward(ModelConfig c, int seqLen) => 4.0 * c.Layers * seqLen * c.Heads * c.HeadDim;

    /// <summary>Training FLOPs per token given how many weights receive gradients.</summary>
    public static double TrainingPerToken(ModelConfig c, int seqLen, long trainedMatmulWeights)
    {
        double n = MatmulWeights(c);
        return 2 * n + 2 * n + 2.0 * trainedMatmulWeights + 3 * AttentionForward(c, seqLen);
    }

    /// <summary>Forward-only FLOPs per token (inference, scoring).</summary>
    public static double ForwardPerToken(ModelConfig c, int seqLen, long extraMatmulWeights = 0) =>
        2.0 * (MatmulWeights(c) + extraMatmulWeights) + AttentionForward(c, seqLen);
}
