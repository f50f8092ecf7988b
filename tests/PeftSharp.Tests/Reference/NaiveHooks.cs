namespace PeftSharp.Tests.Reference;

/// <summary>
/// Optional places where a test changes the naive reference forwards, written as plain functions on rows, so that
/// tuning methods have an independent reference. Module paths are the weight names without ".weight"
/// (GPT-2: "h.0.mlp.c_fc", Llama: "model.layers.0.mlp.down_proj").
/// </summary>
public sealed class NaiveHooks
{
    /// <summary>(layer, "attention" | "mlp", residual row, sub-layer input row, sub-layer output row) → the output row the residual add uses.</summary>
    public Func<int, string, double[], double[], double[], double[]>? SubLayer { get; init; }

    /// <summary>(module path, input row) → the row the linear layer reads.</summary>
    public Func<string, double[], double[]>? LinearInput { get; init; }

    /// <summary>(module path, output row) → the row that leaves the linear layer.</summary>
    public Func<string, double[], double[]>? LinearOutput { get; init; }

    /// <summary>Per layer: prefix keys and values, P rows of kvHeads·headDim each (not rotated), in front of every layer's keys.</summary>
    public Func<int, (double[][] Keys, double[][] Values)>? Prefix { get; init; }

    /// <summary>Virtual token embeddings (rows of hidden size) put in front of the tokens; their logits are dropped.</summary>
    public double[][]? VirtualTokens { get; init; }

    /// <summary>Hidden-state taps: (layer, rows) at the embeddings (0) and after every block (l + 1), before ln_f (GPT-2 only).</summary>
    public Action<int, double[][]>? Observe { get; init; }

    /// <summary>Rewrites the final rows after ln_f, before the head (GPT-2 only).</summary>
    public Func<double[][], double[][]>? Final { get; init; }

    internal int PrefixLength => Prefix?.Invoke(0).Keys.Length ?? 0;
    internal int VirtualCount => VirtualTokens?.Length ?? 0;

    internal double[] In(string path, double[] x) => LinearInput is null ? x : LinearInput(path, x);
    internal double[] Out(string path, double[] y) => LinearOutput is null ? y : LinearOutput(path, y);
    internal double[] Sub(int layer, string kind, double[] residual, double[] input, double[] output) =>
        SubLayer is null ? output : SubLayer(layer, kind, residual, input, output);

    /// <summary>Causal attention where the first <paramref name="prefix"/> keys are visible to every query.</summary>
    internal static double[][] Attention(double[][] q, double[][] k, double[][] v, double scale, int prefix)
    {
        var output = new double[q.Length][];
        for (int i = 0; i < q.Length; i++)
        {
            int seen = prefix + i + 1;
            var scores = new double[seen];
            for (int j = 0; j < seen; j++) scores[j] = NaiveOps.Dot(q[i], k[j]) * scale;
            double[] p = NaiveOps.Softmax(scores);
            var o = new double[v[0].Length];
            for (int j = 0; j < seen; j++)
                for (int d = 0; d < o.Length; d++) o[d] += p[j] * v[j][d];
            output[i] = o;
        }
        return output;
    }
}
