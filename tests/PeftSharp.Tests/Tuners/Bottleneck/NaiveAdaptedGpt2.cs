using PeftSharp.Tests.Reference;

namespace PeftSharp.Tests.Tuners.Bottleneck;

/// <summary>LLM-Adapters' adapter on one Linear, as plain arrays: down [d, in], up [out, d], no biases.</summary>
public sealed record NaiveLinearAdapter(string Placement, float[] Down, float[] Up, int D, double Scaling, string Act);

/// <summary>AdapterHub's adapter at one sub-layer, as plain arrays: down [d, H] + bias, up [H, d] + bias.</summary>
public sealed record NaiveHubAdapter(string Kind, float[] DownW, float[] DownB, float[] UpW, float[] UpB, int D, double Scaling, string Act);

/// <summary>
/// GPT-2 (as <see cref="NaiveGpt2"/>, double arithmetic) with bottleneck adapters written out by hand:
/// <list type="bullet">
/// <item>per Linear (LLM-Adapters), with f(x) = up·act(down·x): input: W(x + s·f(x)); output: z + s·f(z) for z = Wx + b;
/// parallel: Wx + b + s·f(x);</item>
/// <item>per sub-layer (AdapterHub), for block stream h and sub-layer output o, with f(x) = s·(U·act(D·x + bd) + bu):
/// houlsby: h + o + f(o); pfeiffer: h + o + f(o + h); parallel: h + o + f(h).</item>
/// </list>
/// </summary>
public sealed class NaiveAdaptedGpt2(NaiveGpt2Config c, IReadOnlyDictionary<string, float[]> w)
{
    public Dictionary<string, NaiveLinearAdapter> Linear { get; } = new();
    /// <summary>Keyed "{layer}.attn" or "{layer}.mlp".</summary>
    public Dictionary<string, NaiveHubAdapter> SubLayer { get; } = new();

    float[] W(string name) => w["transformer." + name];

    public static double Act(string name, double x) => name switch
    {
        "tanh" => Math.Tanh(x),
        "relu" => Math.Max(0, x),
        "swish" or "silu" => x / (1 + Math.Exp(-x)),
        "gelu_new" => NaiveOps.GeluNew(x),
        _ => throw new ArgumentException(name),
    };

    static double[] Mv(float[] m, double[] x, int rows, int cols, float[]? bias = null)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double sum = bias?[r] ?? 0;
            for (int k = 0; k < cols; k++) sum += m[r * cols + k] * x[k];
            y[r] = sum;
        }
        return y;
    }

    static double[] LinearBranch(NaiveLinearAdapter a, double[] x, int outDim)
    {
        var hidden = Mv(a.Down, x, a.D, x.Length).Select(v => Act(a.Act, v)).ToArray();
        return Mv(a.Up, hidden, outDim, a.D).Select(v => v * a.Scaling).ToArray();
    }

    double[] Lin(string path, double[] x, int inDim, int outDim)
    {
        float[] weight = W(path + ".weight"), bias = W(path + ".bias");
        if (!Linear.TryGetValue("transformer." + path, out var a)) return NaiveOps.Conv1D(x, weight, bias, inDim, outDim);
        switch (a.Placement)
        {
            case "input":
                return NaiveOps.Conv1D(NaiveOps.Add(x, LinearBranch(a, x, inDim)), weight, bias, inDim, outDim);
            case "output":
                var z = NaiveOps.Conv1D(x, weight, bias, inDim, outDim);
                return NaiveOps.Add(z, LinearBranch(a, z, outDim));
            default:
                return NaiveOps.Add(NaiveOps.Conv1D(x, weight, bias, inDim, outDim), LinearBranch(a, x, outDim));
        }
    }

    double[] After(string key, double[] h, double[] o)
    {
        if (!SubLayer.TryGetValue(key, out var a)) return NaiveOps.Add(h, o);
        double[] F(double[] x)
        {
            var hidden = Mv(a.DownW, x, a.D, x.Length, a.DownB).Select(v => Act(a.Act, v)).ToArray();
            return Mv(a.UpW, hidden, x.Length, a.D, a.UpB).Select(v => v * a.Scaling).ToArray();
        }
        var ho = NaiveOps.Add(h, o);
        return a.Kind switch
        {
            "houlsby" => NaiveOps.Add(ho, F(o)),
            "pfeiffer" => NaiveOps.Add(ho, F(NaiveOps.Add(o, h))),
            "parallel" => NaiveOps.Add(ho, F(h)),
            _ => throw new ArgumentException(a.Kind),
        };
    }

    public float[,] Logits(int[] ids)
    {
        int t = ids.Length, e = c.NEmbd, hd = c.HeadDim, inner = c.InnerDim;
        float[] wte = W("wte.weight"), wpe = W("wpe.weight");
        var h = new double[t][];
        for (int i = 0; i < t; i++) h[i] = NaiveOps.Add(NaiveOps.Row(wte, ids[i], e), NaiveOps.Row(wpe, i, e));
        for (int l = 0; l < c.NLayer; l++)
        {
            string p = $"h.{l}.";
            var q = new double[t][]; var k = new double[t][]; var v = new double[t][];
            for (int i = 0; i < t; i++)
            {
                var a = NaiveOps.LayerNorm(h[i], W(p + "ln_1.weight"), W(p + "ln_1.bias"), c.LayerNormEpsilon);
                var qkv = Lin(p + "attn.c_attn", a, e, 3 * e);
                q[i] = NaiveOps.Slice(qkv, 0, e); k[i] = NaiveOps.Slice(qkv, e, e); v[i] = NaiveOps.Slice(qkv, 2 * e, e);
            }
            var merged = new double[t][];
            for (int i = 0; i < t; i++) merged[i] = new double[e];
            for (int n = 0; n < c.NHead; n++)
            {
                var oh = NaiveOps.CausalAttention(
                    q.Select(x => NaiveOps.Slice(x, n * hd, hd)).ToArray(),
                    k.Select(x => NaiveOps.Slice(x, n * hd, hd)).ToArray(),
                    v.Select(x => NaiveOps.Slice(x, n * hd, hd)).ToArray(), 1.0 / Math.Sqrt(hd));
                for (int i = 0; i < t; i++) Array.Copy(oh[i], 0, merged[i], n * hd, hd);
            }
            for (int i = 0; i < t; i++) h[i] = After($"{l}.attn", h[i], Lin(p + "attn.c_proj", merged[i], e, e));
            for (int i = 0; i < t; i++)
            {
                var m = NaiveOps.LayerNorm(h[i], W(p + "ln_2.weight"), W(p + "ln_2.bias"), c.LayerNormEpsilon);
                var up = Lin(p + "mlp.c_fc", m, e, inner).Select(NaiveOps.GeluNew).ToArray();
                h[i] = After($"{l}.mlp", h[i], Lin(p + "mlp.c_proj", up, inner, e));
            }
        }
        var logits = new float[t, c.VocabSize];
        for (int i = 0; i < t; i++)
        {
            var f = NaiveOps.LayerNorm(h[i], W("ln_f.weight"), W("ln_f.bias"), c.LayerNormEpsilon);
            for (int vv = 0; vv < c.VocabSize; vv++) logits[i, vv] = (float)NaiveOps.Dot(f, NaiveOps.Row(wte, vv, e));
        }
        return logits;
    }
}
