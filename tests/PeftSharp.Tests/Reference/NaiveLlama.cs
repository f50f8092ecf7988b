namespace PeftSharp.Tests.Reference;

/// <summary>rope_scaling {"rope_type":"llama3", ...} as in Llama 3.1 / 3.2 configs.</summary>
public sealed record NaiveLlama3RopeScaling
{
    public double Factor { get; init; } = 8.0;
    public double LowFreqFactor { get; init; } = 1.0;
    public double HighFreqFactor { get; init; } = 4.0;
    /// <summary>original_max_position_embeddings. With tiny head dims, use a small value (e.g. 64) so the
    /// unchanged, smoothed and divided frequency bands all occur.</summary>
    public int OriginalMaxPositionEmbeddings { get; init; } = 8192;
}

/// <summary>
/// Hyper-parameters of the Llama family as the naive reference understands them (names follow HF's
/// LlamaConfig / MistralConfig / Qwen2Config). Bias rules per family:
/// llama: q/k/v/o biases iff AttentionBias, gate/up/down biases iff MlpBias;
/// mistral: no biases; qwen2: q/k/v biases always, no o_proj bias, no MLP bias.
/// </summary>
public sealed record NaiveLlamaConfig
{
    /// <summary>"llama", "mistral" or "qwen2".</summary>
    public string ModelType { get; init; } = "llama";
    public int VocabSize { get; init; } = 64;
    public int HiddenSize { get; init; } = 16;
    public int IntermediateSize { get; init; } = 32;
    public int NumHiddenLayers { get; init; } = 2;
    public int NumAttentionHeads { get; init; } = 4;
    public int NumKeyValueHeads { get; init; } = 2;
    /// <summary>head_dim; null (omitted from config.json) means hidden_size / num_attention_heads.</summary>
    public int? HeadDim { get; init; }
    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000.0;
    public int MaxPositionEmbeddings { get; init; } = 64;
    public bool TieWordEmbeddings { get; init; }
    /// <summary>attention_bias (llama only; must stay false for mistral/qwen2, whose biases are fixed by the family).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>mlp_bias (llama only).</summary>
    public bool MlpBias { get; init; }
    /// <summary>null = default RoPE.</summary>
    public NaiveLlama3RopeScaling? RopeScaling { get; init; }

    public int EffectiveHeadDim => HeadDim ?? HiddenSize / NumAttentionHeads;
    public bool HasQkvBias => ModelType == "qwen2" || (ModelType == "llama" && AttentionBias);
    public bool HasOProjBias => ModelType == "llama" && AttentionBias;
    public bool HasMlpBias => ModelType == "llama" && MlpBias;

    public void Validate()
    {
        NaiveOps.Check(ModelType is "llama" or "mistral" or "qwen2", $"unsupported model_type '{ModelType}'");
        NaiveOps.Check(VocabSize > 0 && HiddenSize > 0 && IntermediateSize > 0 && NumHiddenLayers > 0
                       && NumAttentionHeads > 0 && NumKeyValueHeads > 0, "Llama config: sizes must be positive");
        NaiveOps.Check(NumAttentionHeads % NumKeyValueHeads == 0, "num_attention_heads must be a multiple of num_key_value_heads");
        NaiveOps.Check(HeadDim is not null || HiddenSize % NumAttentionHeads == 0, "hidden_size must be divisible by num_attention_heads when head_dim is not given");
        NaiveOps.Check(EffectiveHeadDim % 2 == 0, "head_dim must be even for RoPE");
        NaiveOps.Check(ModelType == "llama" || (!AttentionBias && !MlpBias), $"attention_bias / mlp_bias are llama-only knobs (model_type {ModelType})");
    }
}

/// <summary>
/// Naive Llama / Mistral / Qwen2 (…ForCausalLM) forward, following transformers' modeling_llama in eval mode:
/// <code>
/// h = embed_tokens[ids]; positions 0..T-1
/// per layer:  x = RMSNorm(h)·input_layernorm.w
///             q = x Wqᵀ (+bq) [H·hd], k = x Wkᵀ (+bk) [KV·hd], v = x Wvᵀ (+bv) [KV·hd]  (nn.Linear, W [out,in])
///             head n = features [n·hd, (n+1)·hd); RoPE (rotate_half) on q and k at each position
///             query head n uses kv head n / (H/KV)  (repeat_kv: kv0,kv0,..,kv1,kv1,..)
///             o = causal softmax(q kᵀ / √hd) v; h += o Woᵀ (+bo)
///             x = RMSNorm(h)·post_attention_layernorm.w; h += down(silu(gate(x)) ⊙ up(x))
/// logits = RMSNorm(h)·norm.w  @ (lm_head.weight or embed_tokens.weight if tied)ᵀ
/// </code>
/// RoPE inverse frequencies: 1/theta^(2i/hd), adjusted by the llama3 rule when RopeScaling is set.
/// Arithmetic is double (HF computes inv_freq/cos/sin in float32; the difference is far below test tolerances).
/// </summary>
public sealed class NaiveLlama
{
    private readonly IReadOnlyDictionary<string, float[]> _weights;

    public NaiveLlamaConfig Config { get; }

    /// <summary>Test-supplied changes to the forward (tuning methods' reference); none by default.</summary>
    public NaiveHooks Hooks { get; init; } = new();

    /// <summary>The (possibly llama3-scaled) RoPE inverse frequencies, length head_dim/2.</summary>
    public double[] InvFreq { get; }

    public NaiveLlama(NaiveLlamaConfig config, IReadOnlyDictionary<string, float[]> weights)
    {
        config.Validate();
        Config = config;
        _weights = weights;

        int hd = config.EffectiveHeadDim;
        double[] inv = NaiveOps.RopeInvFreq(hd, config.RopeTheta);
        if (config.RopeScaling is { } rs)
            inv = NaiveOps.Llama3ScaleInvFreq(inv, rs.Factor, rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalMaxPositionEmbeddings);
        InvFreq = inv;

        // Touch every weight once so a missing or mis-sized tensor fails at construction.
        int hs = config.HiddenSize, qDim = config.NumAttentionHeads * hd, kvDim = config.NumKeyValueHeads * hd, ff = config.IntermediateSize;
        W("model.embed_tokens.weight", config.VocabSize * hs);
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            W(p + "input_layernorm.weight", hs);
            W(p + "self_attn.q_proj.weight", qDim * hs);
            W(p + "self_attn.k_proj.weight", kvDim * hs);
            W(p + "self_attn.v_proj.weight", kvDim * hs);
            W(p + "self_attn.o_proj.weight", hs * qDim);
            if (config.HasQkvBias)
            {
                W(p + "self_attn.q_proj.bias", qDim);
                W(p + "self_attn.k_proj.bias", kvDim);
                W(p + "self_attn.v_proj.bias", kvDim);
            }
            if (config.HasOProjBias) W(p + "self_attn.o_proj.bias", hs);
            W(p + "post_attention_layernorm.weight", hs);
            W(p + "mlp.gate_proj.weight", ff * hs);
            W(p + "mlp.up_proj.weight", ff * hs);
            W(p + "mlp.down_proj.weight", hs * ff);
            if (config.HasMlpBias)
            {
                W(p + "mlp.gate_proj.bias", ff);
                W(p + "mlp.up_proj.bias", ff);
                W(p + "mlp.down_proj.bias", hs);
            }
        }
        W("model.norm.weight", hs);
        if (!config.TieWordEmbeddings) W("lm_head.weight", config.VocabSize * hs);
    }

    private float[] W(string name, int? expectedLength = null)
    {
        if (!_weights.TryGetValue(name, out var w))
            throw new KeyNotFoundException($"NaiveLlama: missing weight '{name}'");
        if (expectedLength is int n && w.Length != n)
            throw new ArgumentException($"NaiveLlama: weight '{name}' has {w.Length} values, expected {n}");
        return w;
    }

    private float[]? B(string name, bool present) => present ? W(name) : null;

    /// <summary>Logits [T, V] for the whole sequence (row t predicts token t+1).</summary>
    public float[,] Logits(int[] tokenIds) => NaiveOps.ToFloat(LogitsDouble(tokenIds));

    public double[,] LogitsDouble(int[] tokenIds) => Forward(tokenIds).Logits;

    /// <summary>
    /// Logits [newIds.Length, V] for <paramref name="newIds"/> after <paramref name="pastIds"/> (positions continue at
    /// pastIds.Length): the corresponding rows of the full forward over past ++ new, i.e. what a KV cache must reproduce.
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
    /// HF output_hidden_states convention: entry 0 = embeddings, entry l = output of layer l−1 for
    /// l = 1..L−1, last entry (index L) = final RMSNorm of the last layer's output. Each is [T, hidden_size].
    /// </summary>
    public IReadOnlyList<double[,]> HiddenStates(int[] tokenIds) => Forward(tokenIds).HiddenStates;

    private (double[,] Logits, List<double[,]> HiddenStates) Forward(int[] ids)
    {
        var c = Config;
        int t = ids.Length, hs = c.HiddenSize, hd = c.EffectiveHeadDim, nH = c.NumAttentionHeads, nKv = c.NumKeyValueHeads;
        int qDim = nH * hd, kvDim = nKv * hd, ff = c.IntermediateSize, group = nH / nKv;
        NaiveOps.Check(t > 0, "NaiveLlama: empty input");
        foreach (int id in ids)
            NaiveOps.Check(id >= 0 && id < c.VocabSize, $"NaiveLlama: token id {id} outside vocabulary");

        float[] embed = W("model.embed_tokens.weight");
        // Virtual tokens (prompt tuning) come first; prefix keys (prefix tuning) shift every position by P.
        var hk = Hooks;
        int nv = hk.VirtualCount, pl = hk.PrefixLength, real = t;
        t = nv + real;
        var h = new double[t][];
        for (int i = 0; i < t; i++) h[i] = i < nv ? hk.VirtualTokens![i] : NaiveOps.Row(embed, ids[i - nv], hs);

        double[] Lin(string path, double[] x, bool bias, int inDim, int outDim) =>
            hk.Out(path, NaiveOps.Linear(hk.In(path, x), W(path + ".weight"), B(path + ".bias", bias), inDim, outDim));

        var hidden = new List<double[,]>();
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            hidden.Add(NaiveOps.ToMatrix(h));
            string p = $"model.layers.{l}.";

            // --- attention
            var q = new double[t][]; var k = new double[t][]; var v = new double[t][];
            var attnIn = new double[t][];
            for (int i = 0; i < t; i++)
            {
                double[] x = attnIn[i] = NaiveOps.RmsNorm(h[i], W(p + "input_layernorm.weight"), c.RmsNormEps);
                q[i] = Lin(p + "self_attn.q_proj", x, c.HasQkvBias, hs, qDim);
                k[i] = Lin(p + "self_attn.k_proj", x, c.HasQkvBias, hs, kvDim);
                v[i] = Lin(p + "self_attn.v_proj", x, c.HasQkvBias, hs, kvDim);
            }
            var (pk, pv) = pl > 0 ? hk.Prefix!(l) : ([], []);
            // RoPE on each key head, once (prefix keys are not rotated).
            var kRot = new double[nKv][][];
            var vHead = new double[nKv][][];
            for (int g = 0; g < nKv; g++)
            {
                kRot[g] = new double[pl + t][];
                vHead[g] = new double[pl + t][];
                for (int i = 0; i < pl; i++)
                {
                    kRot[g][i] = NaiveOps.Slice(pk[i], g * hd, hd);
                    vHead[g][i] = NaiveOps.Slice(pv[i], g * hd, hd);
                }
                for (int i = 0; i < t; i++)
                {
                    kRot[g][pl + i] = NaiveOps.ApplyRope(NaiveOps.Slice(k[i], g * hd, hd), pl + i, InvFreq);
                    vHead[g][pl + i] = NaiveOps.Slice(v[i], g * hd, hd);
                }
            }
            var merged = new double[t][];
            for (int i = 0; i < t; i++) merged[i] = new double[qDim];
            for (int n = 0; n < nH; n++)
            {
                int kvHead = n / group;
                var qh = new double[t][];
                for (int i = 0; i < t; i++)
                    qh[i] = NaiveOps.ApplyRope(NaiveOps.Slice(q[i], n * hd, hd), pl + i, InvFreq);
                double[][] oh = NaiveHooks.Attention(qh, kRot[kvHead], vHead[kvHead], 1.0 / Math.Sqrt(hd), pl);
                for (int i = 0; i < t; i++)
                    Array.Copy(oh[i], 0, merged[i], n * hd, hd);
            }
            for (int i = 0; i < t; i++)
                h[i] = NaiveOps.Add(h[i], hk.Sub(l, "attention", h[i], attnIn[i], Lin(p + "self_attn.o_proj", merged[i], c.HasOProjBias, qDim, hs)));

            // --- SwiGLU MLP
            for (int i = 0; i < t; i++)
            {
                double[] x = NaiveOps.RmsNorm(h[i], W(p + "post_attention_layernorm.weight"), c.RmsNormEps);
                double[] gate = Lin(p + "mlp.gate_proj", x, c.HasMlpBias, hs, ff);
                double[] up = Lin(p + "mlp.up_proj", x, c.HasMlpBias, hs, ff);
                var act = new double[ff];
                for (int j = 0; j < ff; j++) act[j] = NaiveOps.Silu(gate[j]) * up[j];
                h[i] = NaiveOps.Add(h[i], hk.Sub(l, "mlp", h[i], x, Lin(p + "mlp.down_proj", act, c.HasMlpBias, ff, hs)));
            }
        }
        if (nv > 0)
        {
            h = h[nv..];
            t = real;
            hidden = hidden.Select(m =>
            {
                var r = new double[m.GetLength(0) - nv, m.GetLength(1)];
                for (int i = 0; i < r.GetLength(0); i++)
                    for (int j = 0; j < r.GetLength(1); j++) r[i, j] = m[i + nv, j];
                return r;
            }).ToList();
        }

        var final = new double[t][];
        for (int i = 0; i < t; i++) final[i] = NaiveOps.RmsNorm(h[i], W("model.norm.weight"), c.RmsNormEps);
        hidden.Add(NaiveOps.ToMatrix(final));

        float[] head = c.TieWordEmbeddings ? embed : W("lm_head.weight");
        var logits = new double[t, c.VocabSize];
        for (int i = 0; i < t; i++)
        {
            double[] row = NaiveOps.Linear(final[i], head, null, hs, c.VocabSize);
            for (int vocab = 0; vocab < c.VocabSize; vocab++) logits[i, vocab] = row[vocab];
        }
        return (logits, hidden);
    }
}
