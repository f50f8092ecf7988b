using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>The two places in a decoder block where AdapterHub puts bottleneck adapters.</summary>
public enum SubLayer
{
    /// <summary>After self-attention (AdapterHub's <c>mh_adapter</c> location, module <c>attention_adapters</c>).</summary>
    Attention,
    /// <summary>After the MLP (AdapterHub's <c>output_adapter</c> location, module <c>output_adapters</c>).</summary>
    Mlp,
}

/// <summary>
/// AdapterHub's <c>BottleneckLayer</c> at one location of one block: the adapters by name (<c>adapters.{name}</c>) and the
/// active one. Registered on the block as <c>attention_adapters</c> or <c>output_adapters</c>, so parameter names read
/// like AdapterHub's (<c>transformer.h.0.output_adapters.adapters.{name}.adapter_up.weight</c>).
/// </summary>
public sealed class SubLayerAdapters : nn.Module
{
#pragma warning disable IDE1006 // AdapterHub's module name
    public readonly AdapterContainer<SubLayerBottleneck> adapters = new();
#pragma warning restore IDE1006

    public SubLayerAdapters(SubLayer location) : base(location == SubLayer.Attention ? "attention_adapters" : "output_adapters")
    {
        Location = location;
        RegisterComponents();
    }

    public SubLayer Location { get; }
    /// <summary>The module name AdapterHub gives this location on a block.</summary>
    public static string ModuleName(SubLayer location) => location == SubLayer.Attention ? "attention_adapters" : "output_adapters";

    /// <summary>The adapter that runs, or null (then the block computes h + o as without adapters).</summary>
    public string? Active { get; set; }

    /// <summary>The residual stream after the sub-layer: the active adapter's result, or h + o when none is active here.</summary>
    public Tensor Apply(Tensor h, Tensor o) =>
        Active is { } name && adapters.Contains(name) ? adapters[name].Apply(h, o) : h.add(o);
}
