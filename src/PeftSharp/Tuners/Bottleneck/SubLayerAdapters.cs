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

    /// <inheritdoc/>
    public HookPlacement Placement => Running is { IsParallel: true } ? HookPlacement.Parallel : HookPlacement.Serial;

    /// <inheritdoc/>
    public Tensor Forward(SubLayerCall call) => Running switch
    {
        null => call.Output,
        { IsParallel: true } a => a.ParallelTerm(call.Residual, call.Output.dtype),
        var a => a.SerialOutput(call.Residual, call.Output),
    };
}
