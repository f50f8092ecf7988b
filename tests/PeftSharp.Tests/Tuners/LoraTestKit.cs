using PeftSharp.Tests.Reference;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>Plain-loop arithmetic on weight arrays, to compute what a LoRA-adapted model must equal.</summary>
internal static class LoraTestKit
{
    public static float[] Values(Tensor t) => t.detach().to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();

    /// <summary>(s·B·A)[o, i] for A [r, in], B [out, r], by loops.</summary>
    public static double[,] Delta(float[] a, float[] b, int r, int inDim, int outDim, double scaling)
    {
        var d = new double[outDim, inDim];
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < inDim; i++)
            {
                double sum = 0;
                for (int k = 0; k < r; k++) sum += (double)b[o * r + k] * a[k * inDim + i];
                d[o, i] = scaling * sum;
            }
        return d;
    }

    /// <summary>Adds an [out, in] delta to a stored weight: nn.Linear is [out, in], GPT-2 Conv1D [in, out].</summary>
    public static void AddTo(Dictionary<string, float[]> weights, string key, double[,] delta, bool conv1d)
    {
        int outDim = delta.GetLength(0), inDim = delta.GetLength(1);
        var w = (float[])weights[key].Clone();
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < inDim; i++)
                w[conv1d ? i * outDim + o : o * inDim + i] += (float)delta[o, i];
        weights[key] = w;
    }

    public static Dictionary<string, float[]> Copy(Dictionary<string, float[]> weights) =>
        weights.ToDictionary(kv => kv.Key, kv => (float[])kv.Value.Clone());

    public static NaiveGpt2Config Gpt2 => new() { VocabSize = 50, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 24 };
    public static NaiveLlamaConfig Llama => new() { ModelType = "llama", VocabSize = 48, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2 };
}
