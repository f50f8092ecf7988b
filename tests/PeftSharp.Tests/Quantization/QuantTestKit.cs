using PeftSharp.Tests.Reference;

namespace PeftSharp.Tests.Quantization;

/// <summary>Which checkpoint tensors a 4-bit load quantizes, and their values after the plain-loop quantizer's round trip.</summary>
internal static class QuantTestKit
{
    /// <summary>GPT-2's Conv1D weights in the blocks ([in, out] on disk) or Llama's *_proj weights ([out, in]); never lm_head or embeddings.</summary>
    public static bool IsQuantizedLinear(string key, bool gpt2) =>
        gpt2 ? key.EndsWith("c_attn.weight") || key.EndsWith("c_proj.weight") || key.EndsWith("c_fc.weight")
             : key.EndsWith("_proj.weight");

    public static float[] Transpose(float[] w, int rows, int cols)
    {
        var t = new float[w.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                t[c * rows + r] = w[r * cols + c];
        return t;
    }

    /// <summary>The matrix as [out, in] row-major (Conv1D weights are stored [in, out]).</summary>
    public static (float[] OutIn, int Out, int In) OutIn(float[] stored, int[] shape, bool conv1d) =>
        conv1d ? (Transpose(stored, shape[0], shape[1]), shape[1], shape[0]) : (stored, shape[0], shape[1]);

    /// <summary>The checkpoint's weights with every quantized linear weight replaced by code·absmax (no double quantization).</summary>
    public static Dictionary<string, float[]> RoundTripped(TinyCheckpoint ckpt, bool gpt2, bool fp4 = false, int blockSize = 64)
    {
        var result = ckpt.Weights.ToDictionary(kv => kv.Key, kv => (float[])kv.Value.Clone());
        foreach (var key in ckpt.Weights.Keys.Where(k => IsQuantizedLinear(k, gpt2)))
        {
            var shape = ckpt.Shapes[key];
            var (w, outDim, inDim) = OutIn(ckpt.Weights[key], shape, gpt2);
            var q = NaiveFourBit.Quantize(w, fp4, blockSize);
            var back = NaiveFourBit.Dequantize(q.Packed, q.Absmax, fp4 ? NaiveFourBit.Fp4 : NaiveFourBit.Nf4, blockSize, w.Length);
            result[key] = gpt2 ? Transpose(back, outDim, inDim) : back;
        }
        return result;
    }
}
