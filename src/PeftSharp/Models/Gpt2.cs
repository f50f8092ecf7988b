using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using Linear = PeftSharp.Models.Layers.Linear;
using LayerNorm = PeftSharp.Models.Layers.LayerNorm;
using Embedding = PeftSharp.Models.Layers.Embedding;
using static TorchSharp.torch;

namespace PeftSharp.Models;

// GPT-2 (transformers' GPT2LMHeadModel), in the order data flows. Parameter names are Hugging Face's:
// transformer.wte / wpe / h.{i}.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj} / ln_f.
// The Conv1D layers store their weight [in, out]; lm_head is tied to wte.

/// <summary>
/// GPT-2 attention (transformers' GPT2Attention): fused q/k/v projection, causal scaled dot-product attention, output projection.
/// </summary>
public sealed class Gpt2Attention : nn.Module<Tensor, Tensor>
{
    /// <summary>Fused query/key/value projection (Conv1D, weight [n_embd, 3·n_embd]).</summary>
    public Linear c_attn;
    /// <summary>Output projection (Conv1D, weight [n_embd, n_embd]).</summary>
    public Linear c_proj;
    readonly int heads, headDim, layer;

    /// <summary>The attention of block <paramref name="layer"/>, parameters uninitialised (torch.empty).</summary>
    public Gpt2Attention(ModelConfig c, int layer, ScalarType dtype, Device device) : base("attn")
    {
        heads = c.NHead;
        headDim = c.NEmbd / c.NHead;
        this.layer = layer;
        c_attn = new Linear(c.NEmbd, 3L * c.NEmbd, hasBias: true, fanInFanOut: true, dtype, device);
        c_proj = new Linear(c.NEmbd, c.NEmbd, hasBias: true, fanInFanOut: true, dtype, device);
        RegisterComponents();
    }

    /// <summary>Attention over <paramref name="x"/> [B, T, n_embd] alone (no cache, no mask).</summary>
    public override Tensor forward(Tensor x) => Forward(x, null, null);

    /// <summary>prefix: keys and values [B, H, P, D] put in front of this forward's own (extension point 3).</summary>
    public Tensor Forward(Tensor x, KvCache? cache, Tensor? attentionMask, (Tensor Keys, Tensor Values)? prefix = null)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var qkv = c_attn.forward(x).view(b, t, 3, heads, headDim).permute(2, 0, 3, 1, 4); // [3, B, H, T, D]
        Tensor q = qkv[0], k = qkv[1], v = qkv[2];
        if (prefix is { } p) (k, v) = (cat([p.Keys, k], 2), cat([p.Values, v], 2));
        if (cache is not null) (k, v) = cache.Append(layer, k, v);
        var y = Attention.Causal(q, k, v, attentionMask);
        return c_proj.forward(y).MoveToOuterDisposeScope();
    }
}

/// <summary>GPT-2 MLP: <c>c_proj(act(c_fc(x)))</c> with the config's activation_function.</summary>
public sealed class Gpt2Mlp : nn.Module<Tensor, Tensor>
{
    /// <summary>Up projection (Conv1D, weight [n_embd, n_inner]).</summary>
    public Linear c_fc;
    /// <summary>Down projection (Conv1D, weight [n_inner, n_embd]).</summary>
    public Linear c_proj;
    readonly string activation;

    /// <summary>An MLP with parameters uninitialised (torch.empty).</summary>
    public Gpt2Mlp(ModelConfig c, ScalarType dtype, Device device) : base("mlp")
    {
        activation = c.ActivationFunction;
        c_fc = new Linear(c.NEmbd, c.Inner, hasBias: true, fanInFanOut: true, dtype, device);
        c_proj = new Linear(c.Inner, c.NEmbd, hasBias: true, fanInFanOut: true, dtype, device);
        RegisterComponents();
    }

    /// <summary><c>c_proj(act(c_fc(x)))</c> for <paramref name="x"/> [.., n_embd].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return c_proj.forward(Activations.Apply(activation, c_fc.forward(x))).MoveToOuterDisposeScope();
    }
}

/// <summary>A GPT-2 block (pre-norm): x + attn(ln_1(x)), then x + mlp(ln_2(x)).</summary>
public sealed class Gpt2Block : DecoderBlock
{
    /// <summary>LayerNorm before attention.</summary>
    public LayerNorm ln_1;
    /// <summary>The block's attention.</summary>
    public Gpt2Attention attn;
    /// <summary>LayerNorm before the MLP.</summary>
    public LayerNorm ln_2;
    /// <summary>The block's MLP.</summary>
    public Gpt2Mlp mlp;

    /// <summary>
    /// Block <paramref name="layer"/>, parameters uninitialised; <paramref name="extensions"/> are the model's hook points.
    /// </summary>
    public Gpt2Block(ModelConfig c, int layer, ExtensionPoints extensions, ScalarType dtype, Device device) : base("block", layer, extensions)
    {
        ln_1 = new LayerNorm(c.NEmbd, c.LayerNormEpsilon, dtype, device);
        attn = new Gpt2Attention(c, layer, dtype, device);
        ln_2 = new LayerNorm(c.NEmbd, c.LayerNormEpsilon, dtype, device);
        mlp = new Gpt2Mlp(c, dtype, device);
        RegisterComponents();
    }

    /// <summary>The block over <paramref name="x"/> [B, T, n_embd] with no cache and no mask.</summary>
    public override Tensor forward(Tensor x) => Forward(x, null, null);

    /// <summary>One block; addPrefix puts the key/value prefixes (extension point 3) in front of this forward's keys.</summary>
    public Tensor Forward(Tensor x, KvCache? cache, Tensor? attentionMask, bool addPrefix = false)
    {
        using var scope = NewDisposeScope();
        var a = ln_1.forward(x);
        var prefix = Prefix(addPrefix, x.shape[0], x.dtype, x.device);
        var h = x.add(Hooked(SubLayerKind.Attention, x, a, attn.Forward(a, cache, attentionMask, prefix)));
        var m = ln_2.forward(h);
        return h.add(Hooked(SubLayerKind.Mlp, h, m, mlp.forward(m))).MoveToOuterDisposeScope();
    }
}

/// <summary>GPT2Model (<c>transformer</c>): token and position embeddings, the blocks, the final LayerNorm.</summary>
public sealed class Gpt2Model : nn.Module<Tensor, Tensor>
{
    /// <summary>Token embeddings [vocab_size, n_embd] (also the tied output head).</summary>
    public Embedding wte;
    /// <summary>Learned position embeddings [n_positions, n_embd].</summary>
    public Embedding wpe;
    /// <summary>The decoder blocks, <c>h.0</c> to <c>h.{n_layer-1}</c>.</summary>
    public ModuleList<Gpt2Block> h;
    /// <summary>The final LayerNorm.</summary>
    public LayerNorm ln_f;

    readonly ExtensionPoints extensions;

    /// <summary>The transformer with parameters uninitialised; <paramref name="extensions"/> are the model's hook points.</summary>
    public Gpt2Model(ModelConfig c, ExtensionPoints extensions, ScalarType dtype, Device device) : base("transformer")
    {
        this.extensions = extensions;
        wte = new Embedding(c.VocabSize, c.NEmbd, dtype, device);
        wpe = new Embedding(c.NPositions, c.NEmbd, dtype, device);
        h = nn.ModuleList(Enumerable.Range(0, c.NLayer).Select(i => new Gpt2Block(c, i, extensions, dtype, device)).ToArray());
        ln_f = new LayerNorm(c.NEmbd, c.LayerNormEpsilon, dtype, device);
        RegisterComponents();
    }

    /// <summary>Final hidden states [B, T, n_embd] for token ids [B, T] (no cache, no mask).</summary>
    public override Tensor forward(Tensor ids) => Forward(ids, null, null);

    /// <summary>
    /// Final hidden states [B, T, n_embd] for token ids [B, T]. Positions continue after what <paramref name="cache"/> holds; <paramref name="attentionMask"/> [B, S] marks real tokens with 1; <paramref name="checkpoint"/> recomputes block activations in backward (gradient checkpointing).
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
            x = wte.forward(ids);
            if (virtualTokens > 0) x = extensions.RewriteEmbeddings(x, ids, attentionMask);
            long cached = cache?.Length ?? 0, t = x.shape[1], offset = cached + prefix;
            // Left-padded rows (batched prompts, continuous batching) count positions from their first real token; padding clamps to 0.
            var rowPositions = cache?.Positions(t, ids.device);
            if (rowPositions is not null && prefix > 0) rowPositions = rowPositions.add(prefix);
            rowPositions = rowPositions?.clamp_min(0);
            long end = offset + t - (cache?.LeftPadding?.Min() ?? 0);
            if (end > wpe.weight.shape[0])
                throw new PeftSharpException($"sequence of {end} tokens exceeds GPT-2's n_positions ({wpe.weight.shape[0]})");
            var positions = rowPositions ?? arange(offset, offset + t, device: ids.device);
            x = x.add(wpe.forward(positions));
            var mask = ExtensionPoints.WidenMask(attentionMask, offset + t);
            bool addPrefix = first && prefix > 0;
            if (taps) extensions.Observe(0, x);
            foreach (var block in h)
            {
                x = checkpoint && cache is null && is_grad_enabled()
                    ? GradientCheckpoint.Run((input, extras) => block.Forward(input, null, extras[0], addPrefix), x, mask)
                    : block.Forward(x, cache, mask, addPrefix);
                if (taps) extensions.Observe(block.Index + 1, x);
            }
            x = ln_f.forward(x);
        }
        finally { backbone?.Dispose(); }
        if (taps) x = extensions.Final(x);
        if (virtualTokens > 0) x = x.narrow(1, virtualTokens, x.shape[1] - virtualTokens);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>GPT2LMHeadModel: the transformer plus the vocabulary head tied to <c>wte</c>.</summary>
public sealed class Gpt2LMHeadModel : CausalLM
{
    /// <summary>The GPT2Model (<c>transformer.*</c> parameters).</summary>
    public Gpt2Model transformer;

    /// <summary>
    /// A GPT-2 model with parameters uninitialised (torch.empty) in <paramref name="dtype"/> on <paramref name="device"/> (default CPU).
    /// </summary>
    /// <exception cref="PeftSharpException">The config has tie_word_embeddings=false.</exception>
    public Gpt2LMHeadModel(ModelConfig config, ScalarType dtype = ScalarType.Float32, Device? device = null)
        : base(nameof(Gpt2LMHeadModel), config, dtype, device ?? CPU)
    {
        if (!config.TieWordEmbeddings)
            throw new PeftSharpException("config.json: GPT-2 with tie_word_embeddings=false is not supported");
        transformer = new Gpt2Model(config, Extensions, dtype, Device);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor OutputEmbedding => transformer.wte.weight;

    /// <inheritdoc/>
    public override IReadOnlyList<DecoderBlock> Blocks => [.. transformer.h];

    /// <inheritdoc/>
    public override Tensor Hidden(Tensor inputIds, KvCache? cache = null, Tensor? attentionMask = null) =>
        transformer.Forward(inputIds, cache, attentionMask, GradientCheckpointing);

    // Old checkpoints carry the causal-mask buffers; lm_head.weight, when saved, is wte again.
    /// <inheritdoc/>
    public override bool IsIgnorableCheckpointKey(string key) =>
        key.EndsWith(".attn.bias") || key.EndsWith(".attn.masked_bias") || key == "lm_head.weight";

    // Checkpoints are written with and without the "transformer." prefix.
    /// <inheritdoc/>
    public override string? ParameterNameFor(string key, ISet<string> names) =>
        names.Contains(key) ? key : names.Contains("transformer." + key) ? "transformer." + key : null;

    /// <inheritdoc/>
    public override void InitializeWeights(long seed)
    {
        using var gen = new Generator((ulong)seed);
        double std = 0.02;
        foreach (var (name, p) in named_parameters())
        {
            if (name.Contains(".ln_") || name.StartsWith("transformer.ln_f"))
                Fill(p, name.EndsWith(".weight") ? 1.0 : 0.0);
            else if (name.EndsWith(".bias"))
                Fill(p, 0.0);
            else if (name.EndsWith("c_proj.weight"))
                InitNormal(p, std / Math.Sqrt(2.0 * Config.NLayer), gen); // GPT-2's residual scaling
            else
                InitNormal(p, std, gen);
        }
    }
}
