using PeftSharp.Models.Layers;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// The places in a <see cref="CausalLM"/> where tuning methods act, named in one place (docs/architecture.md draws them
/// on the data path tokens → embeddings → blocks → head):
/// <list type="number">
/// <item>wrapped layers: every <see cref="Linear"/> and <see cref="Embedding"/> is a <see cref="TunableLayer"/> whose
/// forward goes through an attached <see cref="ILayerTuner"/> (LoRA and its variants, (IA)³) — <see cref="TunableLayers"/>;</item>
/// <item>sub-layer output hooks in every decoder block, after attention and after the MLP, serial or parallel
/// (bottleneck adapters) — <see cref="AddSubLayerHook"/>;</item>
/// <item>per-layer attention key/value prefixes (prefix tuning) — <see cref="AddKvPrefix"/>;</item>
/// <item>an input-embedding rewrite (prompt tuning) — <see cref="AddInputRewrite"/>;</item>
/// <item>per-layer hidden-state taps (side tuning) — <see cref="AddHiddenStateTap"/>.</item>
/// </list>
/// Each <c>Add…</c> returns a handle whose Dispose removes what was added. Several methods may use the same point:
/// they act in the order they were added.
/// </summary>
public sealed class ExtensionPoints
{
    readonly CausalLM model;
    readonly List<ISubLayerHook>[] attentionHooks;
    readonly List<ISubLayerHook>[] mlpHooks;
    readonly List<IKvPrefix> prefixes = [];
    readonly List<IInputEmbeddingRewrite> rewrites = [];
    readonly List<IHiddenStateTap> taps = [];

    internal ExtensionPoints(CausalLM model, int layers)
    {
        this.model = model;
        attentionHooks = Enumerable.Range(0, layers).Select(_ => new List<ISubLayerHook>()).ToArray();
        mlpHooks = Enumerable.Range(0, layers).Select(_ => new List<ISubLayerHook>()).ToArray();
    }

    /// <summary>Number of decoder blocks.</summary>
    public int Layers => attentionHooks.Length;

    // ---------------------------------------------------------------- 1. wrapped layers

    /// <summary>Point 1: every Linear / Embedding of the base model by module path (adapters' own layers excluded).</summary>
    public IEnumerable<(string Path, TunableLayer Layer)> TunableLayers()
    {
        // A tuner's own layers hang below a wrapped layer (lora_A.default) or were added to a block: skip those subtrees.
        var modules = model.named_modules().ToList();
        var wrapped = modules.Where(m => m.module is TunableLayer).Select(m => m.name + ".").ToList();
        var added = modules.Where(m => m.module is DecoderBlock)
            .SelectMany(m => ((DecoderBlock)m.module).AddedModules.Select(n => $"{m.name}.{n}.")).ToList();
        foreach (var (name, module) in modules)
            if (module is TunableLayer layer
                && !wrapped.Any(w => name.StartsWith(w, StringComparison.Ordinal))
                && !added.Any(a => (name + ".").StartsWith(a, StringComparison.Ordinal)))
                yield return (name, layer);
    }

    // ---------------------------------------------------------------- 2. sub-layer output hooks

    /// <summary>Point 2: attaches a hook to the attention or MLP output of block <paramref name="layer"/>.</summary>
    public IDisposable AddSubLayerHook(int layer, SubLayerKind kind, ISubLayerHook hook)
    {
        if (layer < 0 || layer >= Layers) throw new PeftSharpException($"layer {layer} is outside 0..{Layers - 1}");
        var list = HookList(layer, kind);
        list.Add(hook);
        return new Handle(() => list.Remove(hook));
    }

    /// <summary>The hooks on one sub-layer, in the order they run.</summary>
    public IReadOnlyList<ISubLayerHook> SubLayerHooks(int layer, SubLayerKind kind) => HookList(layer, kind);

    List<ISubLayerHook> HookList(int layer, SubLayerKind kind) => kind == SubLayerKind.Attention ? attentionHooks[layer] : mlpHooks[layer];

    /// <summary>Applies the hooks of a sub-layer to its output (called by the decoder blocks).</summary>
    internal Tensor ApplySubLayerHooks(int layer, SubLayerKind kind, Tensor residual, Tensor input, Tensor output)
    {
        var list = HookList(layer, kind);
        foreach (var hook in list)
        {
            var result = hook.Forward(new SubLayerCall(layer, kind, residual, input, output));
            output = hook.Placement == HookPlacement.Parallel ? output.add(result) : result;
        }
        return output;
    }

    // ---------------------------------------------------------------- 3. key/value prefixes

    /// <summary>Point 3: adds per-layer key/value prefixes; several are concatenated in the order added.</summary>
    public IDisposable AddKvPrefix(IKvPrefix prefix)
    {
        prefixes.Add(prefix);
        return new Handle(() => prefixes.Remove(prefix));
    }

    /// <summary>Total prefix positions in front of every layer's keys.</summary>
    public int PrefixLength => prefixes.Sum(p => p.Length);

    /// <summary>The prefix keys and values of one layer, [batch, kvHeads, PrefixLength, headDim] each; null without prefixes.</summary>
    internal (Tensor Keys, Tensor Values)? PrefixFor(int layer, long batch, ScalarType dtype, Device device)
    {
        if (prefixes.Count == 0) return null;
        var keys = new List<Tensor>();
        var values = new List<Tensor>();
        foreach (var p in prefixes)
        {
            var (k, v) = p.For(layer, batch, dtype, device);
            keys.Add(k.to_type(dtype).expand(batch, -1, -1, -1));
            values.Add(v.to_type(dtype).expand(batch, -1, -1, -1));
        }
        return keys.Count == 1 ? (keys[0], values[0]) : (cat(keys, 2), cat(values, 2));
    }

    // ---------------------------------------------------------------- 4. input-embedding rewrite

    /// <summary>Point 4: adds a rewrite of the token embeddings; several run in the order added.</summary>
    public IDisposable AddInputRewrite(IInputEmbeddingRewrite rewrite)
    {
        rewrites.Add(rewrite);
        return new Handle(() => rewrites.Remove(rewrite));
    }

    /// <summary>Virtual tokens put in front of the sequence by the rewrites.</summary>
    public int VirtualTokens => rewrites.Sum(r => r.PrependedTokens);

    /// <summary>
    /// Positions the key/value prefixes and virtual tokens take in front of every sequence. They count against the
    /// model's context (GPT-2's position table and Llama's max_position_embeddings hold them and the real tokens together).
    /// </summary>
    public int LeadingPositions => PrefixLength + VirtualTokens;

    /// <summary>
    /// While the rewrites run: the caller's attention mask [B, T] of the tokens being rewritten (1 real, 0 padding), or
    /// null when every token is real. Rewrites that pool the input (ATTEMPT's instance attention) read it.
    /// </summary>
    public Tensor? InputAttentionMask { get; private set; }

    internal Tensor RewriteEmbeddings(Tensor embeddings, Tensor inputIds, Tensor? attentionMask = null)
    {
        long tokens = embeddings.shape[1];
        InputAttentionMask = attentionMask is null ? null : attentionMask.shape[1] == tokens ? attentionMask : attentionMask.narrow(1, attentionMask.shape[1] - tokens, tokens);
        try { return RewriteAll(embeddings, inputIds); }
        finally { InputAttentionMask = null; }
    }

    Tensor RewriteAll(Tensor embeddings, Tensor inputIds)
    {
        foreach (var r in rewrites)
        {
            long t = embeddings.shape[1];
            embeddings = r.Rewrite(embeddings, inputIds);
            if (embeddings.shape[1] != t + r.PrependedTokens)
                throw new PeftSharpException($"input-embedding rewrite {r.GetType().Name} returned {embeddings.shape[1]} positions, expected {t + r.PrependedTokens}");
        }
        return embeddings;
    }

    // ---------------------------------------------------------------- task ids (task-conditioned methods)

    /// <summary>
    /// Per-example task ids [B] (int64) of the next forwards, for task-conditioned methods (multitask prompt tuning,
    /// Hyperformer): PEFT's <c>task_ids</c> argument. Null when the caller gives none. A single id applies to every row.
    /// Set it with <see cref="UseTaskIds"/>; the training and scoring loops set it from <c>Batch.TaskIds</c>.
    /// </summary>
    public Tensor? TaskIds { get; private set; }

    /// <summary>Makes <paramref name="taskIds"/> [B] (or null) the task ids of the forwards until the handle is disposed (then the previous ones are back).</summary>
    public IDisposable UseTaskIds(Tensor? taskIds)
    {
        var previous = TaskIds;
        TaskIds = taskIds;
        return new Handle(() => TaskIds = previous);
    }

    // ---------------------------------------------------------------- 5. hidden-state taps

    /// <summary>Point 5: adds a hidden-state tap.</summary>
    public IDisposable AddHiddenStateTap(IHiddenStateTap tap)
    {
        taps.Add(tap);
        return new Handle(() => taps.Remove(tap));
    }

    internal bool HasTaps => taps.Count > 0;

    // Set by BeginTaps for one forward: the backbone runs under no_grad while the taps record gradients.
    bool tapsRecordGrad;

    /// <summary>
    /// Starts a forward for the taps. Returns a <c>no_grad</c> scope for the backbone when a tap asks for one and
    /// gradients are on (the caller disposes it after the final norm, before <see cref="Final"/>); else null.
    /// </summary>
    internal IDisposable? BeginTaps(KvCache? cache, Tensor? attentionMask)
    {
        foreach (var t in taps) t.Begin(cache, attentionMask);
        tapsRecordGrad = is_grad_enabled() && taps.Any(t => t.BackboneWithoutGrad);
        return tapsRecordGrad ? no_grad() : null;
    }

    internal void Observe(int layer, Tensor hidden)
    {
        using var grad = tapsRecordGrad ? enable_grad() : null;
        foreach (var t in taps) t.Observe(layer, hidden);
    }

    internal Tensor Final(Tensor hidden)
    {
        foreach (var t in taps) hidden = t.Final(hidden);
        return hidden;
    }

    // ---------------------------------------------------------------- shared by the model families

    /// <summary>
    /// What one forward adds in front of the caller's tokens: prefixes and virtual tokens enter only on the first
    /// forward of a cache (or without one).
    /// </summary>
    internal (bool First, int Prefix, int Virtual) Leading(KvCache? cache)
    {
        bool first = cache is null || cache.Length == 0;
        return first ? (true, PrefixLength, VirtualTokens) : (false, 0, 0);
    }

    /// <summary>
    /// The caller's attention mask [B, L] (real tokens) widened to all <paramref name="keys"/> key positions: the
    /// positions in front (prefix, virtual tokens) are visible.
    /// </summary>
    internal static Tensor? WidenMask(Tensor? mask, long keys)
    {
        if (mask is null || mask.shape[1] >= keys) return mask;
        var ones = TorchSharp.torch.ones([mask.shape[0], keys - mask.shape[1]], mask.dtype, mask.device);
        return cat([ones, mask], 1);
    }

    sealed class Handle(Action remove) : IDisposable
    {
        bool done;
        public void Dispose()
        {
            if (done) return;
            done = true;
            remove();
        }
    }
}
