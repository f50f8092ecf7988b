using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// AdapterHub's <c>BottleneckLayer</c> at one sub-layer of one block: the adapters by name (<c>adapters.{name}</c>) and the
/// active one, attached to the block through a sub-layer hook (extension point 2). Added to the block as
/// <c>attention_adapters</c> or <c>output_adapters</c>, so parameter names read like AdapterHub's
/// (<c>transformer.h.0.output_adapters.adapters.{name}.adapter_up.weight</c>). A serial adapter is a serial hook that
/// returns the new sub-layer output; a parallel adapter is a parallel hook that returns the term added beside the
/// sub-layer, computed from the residual stream entering it (what AdapterHub feeds its parallel adapters).
/// </summary>
public sealed class SubLayerAdapters : nn.Module, ISubLayerHook
{
#pragma warning disable IDE1006 // AdapterHub's module name
    /// <summary>The AdapterHub adapters at this location, by name.</summary>
    public readonly AdapterContainer<SubLayerBottleneck> adapters = new();
    /// <summary>AdapterFusion layers by fusion name (the fused adapters' names joined by ',', as AdapterHub names them).</summary>
    public readonly AdapterContainer<FusionLayer> adapter_fusion_layer = new("adapter_fusion_layer");
#pragma warning restore IDE1006

    /// <summary>An empty holder for <paramref name="location"/>.</summary>
    public SubLayerAdapters(SubLayerKind location) : base(ModuleName(location))
    {
        Location = location;
        RegisterComponents();
    }

    /// <summary>After the attention sub-layer or after the feed-forward sub-layer.</summary>
    public SubLayerKind Location { get; }

    /// <summary>The module name AdapterHub gives this location on a block.</summary>
    public static string ModuleName(SubLayerKind location) => location == SubLayerKind.Attention ? "attention_adapters" : "output_adapters";

    /// <summary>The adapter that runs here, or null (then the sub-layer output passes unchanged).</summary>
    public string? Active { get; set; }

    SubLayerBottleneck? Running => Active is { } name && adapters.Contains(name) ? adapters[name] : null;

    /// <summary>The fusion that runs here instead of a single adapter (AdapterHub's active <c>Fuse(...)</c>), or null.</summary>
    public FusionSetup? ActiveFusion { get; set; }

    /// <summary>When set, receives each fusion forward's attention probabilities [B, T, N] (float32, detached).</summary>
    public Action<Tensor>? FusionAttentionSink { get; set; }

    FusionSetup? RunningFusion => ActiveFusion is { } f && adapter_fusion_layer.Contains(f.Key) ? f : null;

    /// <inheritdoc/>
    public HookPlacement Placement => RunningFusion is null && Running is { IsParallel: true } ? HookPlacement.Parallel : HookPlacement.Serial;

    /// <inheritdoc/>
    public Tensor Forward(SubLayerCall call) => RunningFusion is { } fusion ? Fuse(call, fusion) : Running switch
    {
        null => call.Output,
        { IsParallel: true } a => a.ParallelTerm(call.Residual, call.Output.dtype),
        var a => a.SerialOutput(call.Residual, call.Output),
    };

    /// <summary>
    /// AdapterHub's <c>compose_fuse</c> for a pre-norm block: the last fused adapter's config decides the adapter input
    /// x (o, or o + h with <c>original_ln_before</c>), the residual (o with <c>residual_before_ln</c>, else x) and the
    /// query (o with <c>query_before_ln</c>, else x); every fused adapter present here maps x to its scaled output; the
    /// fusion layer mixes them and adds the residual; h is added by the block (taken back out without
    /// <c>original_ln_after</c>). Adapters left out of this layer are skipped; with none present the output passes.
    /// </summary>
    Tensor Fuse(SubLayerCall call, FusionSetup fusion)
    {
        var present = fusion.Adapters.Where(adapters.Contains).ToList();
        if (present.Count == 0) return call.Output;
        using var scope = NewDisposeScope();
        var h = call.Residual;
        var o = call.Output;
        var last = adapters[present[^1]].Config;
        var layer = adapter_fusion_layer[fusion.Key];
        var x = last.OriginalLnBefore ? o.add(h) : o;
        var residual = last.ResidualBeforeLn == "true" ? o : x;
        var query = layer.Config.QueryBeforeLn ? o : x;
        var outputs = stack(present.Select(n => adapters[n].ScaledUp(x)).ToArray(), 2); // [B, T, N, H]
        var result = layer.Forward(query, outputs, residual, FusionAttentionSink);
        if (!last.OriginalLnAfter) result = result.sub(h);
        return result.MoveToOuterDisposeScope();
    }
}

/// <summary>An active AdapterFusion: its layer name (<paramref name="Key"/>, the adapter names joined by ',') and the fused adapters in order.</summary>
public sealed record FusionSetup(string Key, IReadOnlyList<string> Adapters);
