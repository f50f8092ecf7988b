using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>The two sub-layers of a decoder block whose outputs can be hooked.</summary>
public enum SubLayerKind
{
    /// <summary>Self-attention (GPT-2's <c>attn</c>, Llama's <c>self_attn</c>), including its output projection.</summary>
    Attention,
    /// <summary>The feed-forward network (<c>mlp</c>).</summary>
    Mlp,
}

/// <summary>How a <see cref="ISubLayerHook"/> combines with the sub-layer it is attached to.</summary>
public enum HookPlacement
{
    /// <summary>The hook's result replaces the sub-layer output, before the residual add (Houlsby, Pfeiffer adapters).</summary>
    Serial,
    /// <summary>The hook's result is added to the sub-layer output, beside it (parallel adapters, He et al. 2022).</summary>
    Parallel,
}

/// <summary>
/// What a sub-layer hook sees in block <see cref="Layer"/>: <see cref="Residual"/> is the residual stream entering the
/// sub-layer (the block input for attention, the post-attention stream for the MLP), <see cref="Input"/> is what the
/// sub-layer reads (the residual after its layer norm), <see cref="Output"/> is the sub-layer output so far (after the
/// hooks added before this one). The block then computes <c>Residual + result</c>.
/// </summary>
public readonly record struct SubLayerCall(int Layer, SubLayerKind Kind, Tensor Residual, Tensor Input, Tensor Output);

/// <summary>
/// Extension point 2: a function attached to one sub-layer of one decoder block. A <see cref="HookPlacement.Serial"/>
/// hook returns the new sub-layer output; a <see cref="HookPlacement.Parallel"/> hook returns a term that the block
/// adds to the output. Hooks on the same sub-layer run in the order they were added.
/// </summary>
public interface ISubLayerHook
{
    /// <summary>Whether the hook replaces the sub-layer's output (serial) or adds to it (parallel).</summary>
    HookPlacement Placement { get; }

    /// <summary>Serial: the new sub-layer output. Parallel: the term added to it. Same shape as <c>call.Output</c>.</summary>
    Tensor Forward(SubLayerCall call);
}
