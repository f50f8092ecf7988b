using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>Small helpers shared by the model tests: run our model, compare with the reference.</summary>
internal static class ModelTestKit
{
    public static float[,] Logits(CausalLM model, int[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var input = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        var logits = model.Forward(input)[0].to_type(ScalarType.Float32).cpu();
        return ToArray(logits);
    }

    public static float[,] ToArray(Tensor t2d)
    {
        long rows = t2d.shape[0], cols = t2d.shape[1];
        var flat = t2d.contiguous().data<float>().ToArray();
        var result = new float[rows, cols];
        Buffer.BlockCopy(flat, 0, result, 0, flat.Length * sizeof(float));
        return result;
    }

    public static double MaxAbsDiff(float[,] a, float[,] b)
    {
        Assert.Equal(a.GetLength(0), b.GetLength(0));
        Assert.Equal(a.GetLength(1), b.GetLength(1));
        double max = 0;
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < a.GetLength(1); j++)
                max = Math.Max(max, Math.Abs(a[i, j] - b[i, j]));
        return max;
    }

    public static int[] RandomIds(int count, int vocab, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => random.Next(vocab)).ToArray();
    }
}
