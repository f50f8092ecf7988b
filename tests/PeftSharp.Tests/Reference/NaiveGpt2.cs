namespace PeftSharp.Tests.Reference;

/// <summary>The GPT-2 hyper-parameters the naive reference needs (names follow HF's GPT2Config).</summary>
public sealed record NaiveGpt2Config
{
    public int VocabSize { get; init; } = 64;
    /// <summary>n_embd (E).</summary>
    public int NEmbd { get; init; } = 16;
    public int NLayer { get; init; } = 2;
    public int NHead { get; init; } = 2;
    /// <summary>n_positions: rows of wpe, the longest sequence the model accepts.</summary>
    public int NPositions { get; init; } = 32;
    public double LayerNormEpsilon { get; init; } = 1e-5;
    /// <summary>n_inner: MLP width; null (HF default) means 4·n_embd.</summary>
    public int? NInner { get; init; }

    public int HeadDim => NEmbd / NHead;
    public int InnerDim => NInner ?? 4 * NEmbd;

    public void Validate()
    {
        NaiveOps.Check(VocabSize > 0 && NEmbd > 0 && NLayer > 0 && NHead > 0 && NPositions > 0, "GPT-2 config: sizes must be positive");
        NaiveOps.Check(NEmbd % NHead == 0, "GPT-2 config: n_embd must be divisible by n_head");
    }
}

/// <summary>
/// Naive GPT-2 (GPT2LMHeadModel) forward, following transformers' modeling_gpt2 in eval mode (no dropout):
/// <code>
/// h = wte[ids] + wpe[0..T-1]
/// per block:  a = ln_1(h); [q|k|v] = a @ c_attn.W + c_attn.b  (Conv1D, W [E,3E]);
///             heads: head n uses features [n·hd, (n+1)·hd) of q, k and v;
///             o = causal softmax(q kᵀ / √hd) v; merged heads; h += o @ c_proj.W + c_proj.b
///             m = ln_2(h); h += c_proj(gelu_new(c_fc(m)))
/// logits = ln_f(h) @ wteᵀ  (tied lm_head)
/// </code>
/// Weights are looked up by HF names with or without the "transformer." prefix; any attn.bias / attn.masked_bias
/// buffers present are ignored. Arithmetic is double; inputs are the float32 values given.
/// </summary>
public sealed class NaiveGpt2
{
    private readonly IReadOnlyDictionary<string, float[]> _weights;
    private readonly string _prefix;

    public NaiveGpt2Config Config { get; }

    /// <summary>Test-supplied changes to the forward (tuning methods' reference); none by default.</summary>
    public NaiveHooks Hooks { get; init; } = new();

    public NaiveGpt2(NaiveGpt2Config config, IReadOnlyDictionary<string, float[]> weights)
    {
        config.Validate();
        Config = config;
        _weights = weights;
        _prefix = weights.ContainsKey("transformer.wte.weight") ? "transformer." : "";
        // Touch every weight once so a missing or mis-sized tensor fails at construction.
        int e = config.NEmbd, inner = config.InnerDim;
        W("wte.weight", config.VocabSize * e);
        W("wpe.weight", config.NPositions * e);
        for (int l = 0; l < config.NLayer; l++)
        {
            string p = $"h.{l}.";
            W(p + "ln_1.weight", e); W(p + "ln_1.bias", e);
            W(p + "attn.c_attn.weight", e * 3 * e); W(p + "attn.c_attn.bias", 3 * e);
            W(p + "attn.c_proj.weight", e * e); W(p + "attn.c_proj.bias", e);
            W(p + "ln_2.weight", e); W(p + "ln_2.bias", e);
            W(p + "mlp.c_fc.weight", e * inner); W(p + "mlp.c_fc.bias", inner);
            W(p + "mlp.c_proj.weight", inner * e); W(p + "mlp.c_proj.bias", e);
        }
        W("ln_f.weight", e); W("ln_f.bias", e);
    }

    private float[] W(string name, int? expectedLength = null)
    {
        string key = _prefix + name;
        if (!_weights.TryGetValue(key, out var w))
            throw new KeyNotFoundException($"NaiveGpt2: missing weight '{key}'");
        if (expectedLength is int n && w.Length != n)
            throw new ArgumentException($"NaiveGpt2: weight '{key}' has {w.Length} values, expected {n}");
        return w;
    }

    /// <summary>Logits [T, V] for the whole sequence (row t predicts token t+1).</summary>
    public float[,] Logits(int[] tokenIds) => NaiveOps.ToFloat(LogitsDouble(tokenIds));

    public double[,] LogitsDouble(int[] tokenIds) => Forward(tokenIds).Logits;

    /// <summary>
    /// Logits [newIds.Length, V] for <paramref name="newIds"/> when the model has already seen <paramref name="pastIds"/>
    /// (positions continue at pastIds.Length). Defined as the corresponding rows of the full forward over past ++ new,
    /// which is exactly what a correct KV cache must reproduce.
    /// </summary>
    public float[,] Logits(int[] pastIds, int[] newIds) => NaiveOps.ToFloat(LogitsDouble(pastIds, newIds));

    public double[,] LogitsDouble(int[] pastIds, int[] newIds)
    {
        double[,] all = LogitsDouble(pastIds.Concat(newIds).ToArray());
        var rows = new double[newIds.Length, Config.VocabSize];
        for (int t = 0; t < newIds.Length; t++)
            for (int v = 0; v < Config.VocabSize; v++)
                rows[t, v] = all[pastIds.Length + t, v];
        return rows;
    }

    /// <summary>
    /// HF output_hidden_states convention: entry 0 = embeddings (wte + wpe), entry l = output of block l−1 for
    /// l = 1..n_layer−1, and the last entry (index n_layer) = ln_f(output of the last block). Each is [T, E].
    /// </summary>
    public IReadOnlyList<double[,]> HiddenStates(int[] tokenIds) => Forward(tokenIds).HiddenStates;

    static double[,] DropRows(double[,] m, int n)
    {
        var r = new double[m.GetLength(0) - n, m.GetLength(1)];
        for (int i = 0; i < r.GetLength(0); i++)
            for (int j = 0; j < r.GetLength(1); j++) r[i, j] = m[i + n, j];
        return r;
    }

    private (double[,] Logits, List<double[,]> HiddenStates) Forward(int[] ids)
    {
        var c = Config;
        int t = ids.Length, e = c.NEmbd, hd = c.HeadDim, inner = c.InnerDim;
        NaiveOps.Check(t > 0, "NaiveGpt2: empty input");
        NaiveOps.Check(t <= c.NPositions, $"NaiveGpt2: {t} tokens exceed n_positions {c.NPositions}");
        foreach (int id in ids)
            NaiveOps.Check(id >= 0 && id < c.VocabSize, $"NaiveGpt2: token id {id} outside vocabulary");

        float[] wte = W("wte.weight"), wpe = W("wpe.weight");
        // Virtual tokens (prompt tuning) come first; prefix keys (prefix tuning) shift every position by P.
        var hk = Hooks;
        int nv = hk.VirtualCount, pl = hk.PrefixLength, real = t;
        NaiveOps.Check(pl + nv + t <= c.NPositions, $"NaiveGpt2: {pl + nv + t} positions exceed n_positions {c.NPositions}");
        t = nv + real;
        var h = new double[t][];
        for (int i = 0; i < t; i++)
        {
            double[] tok = i < nv ? hk.VirtualTokens![i] : NaiveOps.Row(wte, ids[i - nv], e);
            h[i] = NaiveOps.Add(tok, NaiveOps.Row(wpe, pl + i, e));
        }

        double[] Conv(string path, double[] x, int inDim, int outDim) =>
            hk.Out(path, NaiveOps.Conv1D(hk.In(path, x), W(path + ".weight"), W(path + ".bias"), inDim, outDim));

        var hidden = new List<double[,]>();
        for (int l = 0; l < c.NLayer; l++)
        {
            hk.Observe?.Invoke(l, h.Select(r => (double[])r.Clone()).ToArray());
            hidden.Add(NaiveOps.ToMatrix(h));
            string p = $"h.{l}.";

            // --- attention
            var q = new double[t][]; var k = new double[t][]; var v = new double[t][];
            var attnIn = new double[t][];
            for (int i = 0; i < t; i++)
            {
                double[] a = attnIn[i] = NaiveOps.LayerNorm(h[i], W(p + "ln_1.weight"), W(p + "ln_1.bias"), c.LayerNormEpsilon);
                double[] qkv = Conv(p + "attn.c_attn", a, e, 3 * e);
                q[i] = NaiveOps.Slice(qkv, 0, e);
                k[i] = NaiveOps.Slice(qkv, e, e);
                v[i] = NaiveOps.Slice(qkv, 2 * e, e);
            }
            if (pl > 0)
            {
                var (pk, pv) = hk.Prefix!(l);
                k = pk.Concat(k).ToArray();
                v = pv.Concat(v).ToArray();
            }
            var merged = new double[t][];
            for (int i = 0; i < t; i++) merged[i] = new double[e];
            for (int n = 0; n < c.NHead; n++)
            {
                var qh = q.Select(x => NaiveOps.Slice(x, n * hd, hd)).ToArray();
                var kh = k.Select(x => NaiveOps.Slice(x, n * hd, hd)).ToArray();
                var vh = v.Select(x => NaiveOps.Slice(x, n * hd, hd)).ToArray();
                double[][] oh = NaiveHooks.Attention(qh, kh, vh, 1.0 / Math.Sqrt(hd), pl);
                for (int i = 0; i < t; i++)
                    Array.Copy(oh[i], 0, merged[i], n * hd, hd);
            }
            for (int i = 0; i < t; i++)
                h[i] = NaiveOps.Add(h[i], hk.Sub(l, "attention", h[i], attnIn[i], Conv(p + "attn.c_proj", merged[i], e, e)));

            // --- MLP
            for (int i = 0; i < t; i++)
            {
                double[] m = NaiveOps.LayerNorm(h[i], W(p + "ln_2.weight"), W(p + "ln_2.bias"), c.LayerNormEpsilon);
                double[] up = Conv(p + "mlp.c_fc", m, e, inner);
                for (int j = 0; j < inner; j++) up[j] = NaiveOps.GeluNew(up[j]);
                h[i] = NaiveOps.Add(h[i], hk.Sub(l, "mlp", h[i], m, Conv(p + "mlp.c_proj", up, inner, e)));
            }
        }
        hk.Observe?.Invoke(c.NLayer, h.Select(r => (double[])r.Clone()).ToArray());
        if (nv > 0)
        {
            h = h[nv..];
            t = real;
            hidden = hidden.Select(m => DropRows(m, nv)).ToList();
        }

        var final = new double[t][];
        for (int i = 0; i < t; i++)
            final[i] = NaiveOps.LayerNorm(h[i], W("ln_f.weight"), W("ln_f.bias"), c.LayerNormEpsilon);
        hidden.Add(NaiveOps.ToMatrix(final));
        if (hk.Final is not null) final = hk.Final(final);

        // Tied lm_head: logits[i, v] = final[i] · wte[v]
        var logits = new double[t, c.VocabSize];
        for (int i = 0; i < t; i++)
            for (int vocab = 0; vocab < c.VocabSize; vocab++)
                logits[i, vocab] = NaiveOps.Dot(final[i], NaiveOps.Row(wte, vocab, e));
        return (logits, hidden);
    }
}
