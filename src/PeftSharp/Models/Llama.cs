using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using Linear = PeftSharp.Models.Layers.Linear;
using LayerNorm = PeftSharp.Models.Layers.LayerNorm;
using Embedding = PeftSharp.Models.Layers.Embedding;
using static TorchSharp.torch;

namespace PeftSharp.Models;

// The Llama family (transformers' LlamaForCausalLM; Mistral and Qwen2 are the same graph with other
// defaults), in the order data flows: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP.
// Parameter names are Hugging Face's: model.embed_tokens / layers.{i}.{input_layernorm,
// self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj} / norm, and lm_head.

/// <summary>
/// Llama attention (transformers' LlamaAttention): q/k/v projections, rotary embeddings, grouped-query causal attention (Mistral/Qwen2 sliding window when configured), output projection.
/// </summary>
public sealed class LlamaAttention : nn.Module<Tensor, Tensor>
{
    /// <summary>Query projection [hidden] → [heads·head_dim].</summary>
    public Linear q_proj;
    /// <summary>Key projection [hidden] → [kv_heads·head_dim].</summary>
    public Linear k_proj;
    /// <summary>Value projection [hidden] → [kv_heads·head_dim].</summary>
    public Linear v_proj;
    /// <summary>Output projection [heads·head_dim] → [hidden].</summary>
    public Linear o_proj;
    readonly int heads, kvHeads, headDim, layer;

    /// <summary>The attention of layer <paramref name="layer"/>, parameters uninitialised (torch.empty).</summary>
    public LlamaAttention(ModelConfig c, int layer, ScalarType dtype, Device device) : base("self_attn")
    {
        heads = c.NumAttentionHeads;
        kvHeads = c.KeyValueHeads;
        headDim = c.HeadDim;
        this.layer = layer;
        q_proj = new Linear(c.HiddenSize, (long)heads * headDim, c.QkvBias, false, dtype, device);
        k_proj = new Linear(c.HiddenSize, (long)kvHeads * headDim, c.QkvBias, false, dtype, device);
        v_proj = new Linear(c.HiddenSize, (long)kvHeads * headDim, c.QkvBias, false, dtype, device);
        o_proj = new Linear((long)heads * headDim, c.HiddenSize, c.OutputBias, false, dtype, device);
        RegisterComponents();
    }

    /// <summary>Not supported: Llama attention needs the rotary tables; call <see cref="Forward"/>.</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public override Tensor forward(Tensor x) => throw new NotSupportedException("call Forward with rotary tables");

    /// <summary>prefix: keys and values [B, Hkv, P, D] put in front of this forward's own, not rotated (extension point 3).</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, KvCache? cache, Tensor? attentionMask, (Tensor Keys, Tensor Values)? prefix = null)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.forward(x).view(b, t, heads, headDim).transpose(1, 2);
        var k = k_proj.forward(x).view(b, t, kvHeads, headDim).transpose(1, 2);
        var v = v_proj.forward(x).view(b, t, kvHeads, headDim).transpose(1, 2);
        q = RotaryEmbedding.Apply(q, cos, sin);
        k = RotaryEmbedding.Apply(k, cos, sin);
        if (prefix is { } p) (k, v) = (cat([p.Keys, k], 2), cat([p.Values, v], 2));
        if (cache is not null) (k, v) = cache.Append(layer, k, v);
        var y = Attention.Causal(q, k, v, attentionMask);
        return o_proj.forward(y).MoveToOuterDisposeScope();
    }
}

/// <summary>Llama MLP (SwiGLU): <c>down_proj(act(gate_proj(x)) · up_proj(x))</c>, act = hidden_act (silu).</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    /// <summary>Gate projection [hidden] → [intermediate].</summary>
    public Linear gate_proj;
    /// <summary>Up projection [hidden] → [intermediate].</summary>
    public Linear up_proj;
    /// <summary>Down projection [intermediate] → [hidden].</summary>
    public Linear down_proj;
    readonly string activation;

    /// <summary>An MLP with parameters uninitialised (torch.empty).</summary>
    public LlamaMlp(ModelConfig c, ScalarType dtype, Device device) : base("mlp")
    {
        activation = c.HiddenAct;
        gate_proj = new Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias, false, dtype, device);
        up_proj = new Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias, false, dtype, device);
        down_proj = new Linear(c.IntermediateSize, c.HiddenSize, c.MlpBias, false, dtype, device);
        RegisterComponents();
    }

    /// <summary><c>down_proj(act(gate_proj(x)) · up_proj(x))</c> for <paramref name="x"/> [.., hidden].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var gated = Activations.Apply(activation, gate_proj.forward(x)).mul(up_proj.forward(x));
        return down_proj.forward(gated).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A Llama decoder layer (pre-norm): x + self_attn(input_layernorm(x)), then x + mlp(post_attention_layernorm(x)).
/// </summary>
public sealed class LlamaDecoderLayer : DecoderBlock
{
    /// <summary>RMSNorm before attention.</summary>
    public RmsNorm input_layernorm;
    /// <summary>The layer's attention.</summary>
    public LlamaAttention self_attn;
    /// <summary>RMSNorm before the MLP.</summary>
    public RmsNorm post_attention_layernorm;
    /// <summary>The layer's MLP.</summary>
    public LlamaMlp mlp;

    /// <summary>
    /// Layer <paramref name="layer"/>, parameters uninitialised; <paramref name="extensions"/> are the model's hook points.
    /// </summary>
    public LlamaDecoderLayer(ModelConfig c, int layer, ExtensionPoints extensions, ScalarType dtype, Device device) : base("layer", layer, extensions)
    {
        input_layernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        self_attn = new LlamaAttention(c, layer, dtype, device);
        post_attention_layernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        mlp = new LlamaMlp(c, dtype, device);
        RegisterComponents();
    }

    /// <summary>Not supported: a Llama layer needs the rotary tables; call <see cref="Forward"/>.</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public override Tensor forward(Tensor x) => throw new NotSupportedException("call Forward with rotary tables");

    /// <summary>One block; addPrefix puts the key/value prefixes (extension point 3) in front of this forward's keys.</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, KvCache? cache, Tensor? attentionMask, bool addPrefix = false)
    {
        using var scope = NewDisposeScope();
        var a = input_layernorm.forward(x);
        var prefix = Prefix(addPrefix, x.shape[0], x.dtype, x.device);
        var h = x.add(Hooked(SubLayerKind.Attention, x, a, self_attn.Forward(a, cos, sin, cache, attentionMask, prefix)));
        var m = post_attention_layernorm.forward(h);
        return h.add(Hooked(SubLayerKind.Mlp, h, m, mlp.forward(m))).MoveToOuterDisposeScope();
    }
}

/// <summary>LlamaModel (<c>model</c>): token embeddings, the decoder layers, the final RMSNorm, and the rotary tables.</summary>
public sealed class LlamaModel : nn.Module<Tensor, Tensor>
{
    /// <summary>Token embeddings [vocab_size, hidden_size].</summary>
    public Embedding embed_tokens;
    /// <summary>The decoder layers, <c>layers.0</c> to <c>layers.{num_hidden_layers-1}</c>.</summary>
    public ModuleList<LlamaDecoderLayer> layers;
    /// <summary>The final RMSNorm.</summary>
    public RmsNorm norm;
    readonly RotaryEmbedding rope;
    readonly ExtensionPoints extensions;

    /// <summary>The decoder with parameters uninitialised; <paramref name="extensions"/> are the model's hook points.</summary>
    public LlamaModel(ModelConfig c, ExtensionPoints extensions, ScalarType dtype, Device device) : base("model")
    {
        this.extensions = extensions;
        embed_tokens = new Embedding(c.VocabSize, c.HiddenSize, dtype, device);
        layers = nn.ModuleList(Enumerable.Range(0, c.NumHiddenLayers).Select(i => new LlamaDecoderLayer(c, i, extensions, dtype, device)).ToArray());
        norm = new RmsNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        rope = new RotaryEmbedding(c.HeadDim, c.RopeTheta, c.RopeScaling);
        RegisterComponents();
    }

    /// <summary>The rotary position embedding (rope_theta and rope_scaling from the config).</summary>
    public RotaryEmbedding Rope => rope;

    /// <summary>Final hidden states [B, T, hidden] for token ids [B, T] (no cache, no mask).</summary>
    public override Tensor forward(Tensor ids) => Forward(ids, null, null);

    /// <summary>
    /// Final hidden states [B, T, hidden] for token ids [B, T]. Positions continue after what <paramref name="cache"/> holds; <paramref name="attentionMask"/> [B, S] marks real tokens with 1; <paramref name="checkpoint"/> recomputes layer activations in backward (gradient checkpointing).
    /// </summary>
    public Tensor Forward(Tensor ids, KvCache? cache, Tensor? attentionMask, bool checkpoint = false)
    {
        using var scope = NewDisposeScope();
        // Extension points 3 and 4 put prefix keys and virtual tokens in front of the caller's tokens (first forward only).
        var (first, prefix, virtualTokens) = extensions.Leading(cache);
        bool taps = extensions.HasTaps;
        // Extension point 5: taps may ask for a backbone without autograd (ladder side tuning); disposed before Final.
        var backbone = taps ? extensions.BeginTaps(cache, attentionMask) : null;
        Tensor x;
        try
        {
            x = embed_tokens.forward(ids);
            if (virtualTokens > 0) x = extensions.RewriteEmbeddings(x, ids, attentionMask);
            long cached = cache?.Length ?? 0, t = x.shape[1], offset = cached + prefix;
            // Rows of different lengths in one cache (continuous batching) carry their own positions.
            var rowPositions = cache?.Positions(t, x.device);
            if (rowPositions is not null && prefix > 0) rowPositions = rowPositions.add(prefix);
            var (cos, sin) = rowPositions is not null
                ? rope.Tables(rowPositions, x.dtype)
                : rope.Tables(offset, t, x.dtype, x.device);
            var mask = ExtensionPoints.WidenMask(attentionMask, offset + t);
            bool addPrefix = first && prefix > 0;
            if (taps) extensions.Observe(0, x);
            foreach (var layer in layers)
            {
                x = checkpoint && cache is null && is_grad_enabled()
                    ? GradientCheckpoint.Run((input, extras) => layer.Forward(input, extras[0]!, extras[1]!, null, extras[2], addPrefix), x, cos, sin, mask)
                    : layer.Forward(x, cos, sin, cache, mask, addPrefix);
                if (taps) extensions.Observe(layer.Index + 1, x);
            }
            x = norm.forward(x);
        }
        finally { backbone?.Dispose(); }
        if (taps) x = extensions.Final(x);
        if (virtualTokens > 0) x = x.narrow(1, virtualTokens, x.shape[1] - virtualTokens);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>LlamaForCausalLM (also Mistral and Qwen2): the decoder plus <c>lm_head</c>, tied to embed_tokens when the config says so.</summary>
public sealed class LlamaForCausalLM : CausalLM
{
    /// <summary>The decoder (<c>model.*</c> parameters).</summary>
    public LlamaModel model;
    /// <summary>
    /// The vocabulary head [vocab_size, hidden_size]; null when tied to <c>model.embed_tokens</c> (tie_word_embeddings).
    /// </summary>
    public Linear? lm_head;

    /// <summary>
    /// A Llama-family model with parameters uninitialised (torch.empty) in <paramref name="dtype"/> on <paramref name="device"/> (default CPU).
    /// </summary>
    public LlamaForCausalLM(ModelConfig config, ScalarType dtype = ScalarType.Float32, Device? device = null)
        : base(nameof(LlamaForCausalLM), config, dtype, device ?? CPU)
    {
        model = new LlamaModel(config, Extensions, dtype, Device);
        lm_head = config.TieWordEmbeddings ? null : new Linear(config.HiddenSize, config.VocabSize, false, false, dtype, Device);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor OutputEmbedding => lm_head?.weight ?? model.embed_tokens.weight;

    /// <inheritdoc/>
    public override IReadOnlyList<DecoderBlock> Blocks => [.. model.layers];

    /// <inheritdoc/>
    public override Tensor Hidden(Tensor inputIds, KvCache? cache = null, Tensor? attentionMask = null) =>
        model.Forward(inputIds, cache, attentionMask, GradientCheckpointing);

    // Older exports saved the rotary inverse frequencies; tied checkpoints may still carry lm_head.
    /// <inheritdoc/>
    public override bool IsIgnorableCheckpointKey(string key) =>
        key.EndsWith(".rotary_emb.inv_freq") || (lm_head is null && key == "lm_head.weight");

    /// <inheritdoc/>
    public override void InitializeWeights(long seed)
    {
        using var gen = new Generator((ulong)seed);
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("norm.weight")) Fill(p, 1.0);
            else if (name.EndsWith(".bias")) Fill(p, 0.0);
            else InitNormal(p, 0.02, gen);
        }
    }
}
