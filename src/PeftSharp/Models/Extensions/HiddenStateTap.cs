using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Extension point 5: per-layer hidden-state taps (side tuning, ladder side tuning). A tap sees the residual stream
/// after the embeddings (layer 0) and after each decoder block i (layer i + 1), then may rewrite the final normalised
/// hidden states (a side network's output merged into the backbone's). Taps run in the order they were added.
/// </summary>
public interface IHiddenStateTap
{
    /// <summary>The residual stream [B, T, H] at <paramref name="layer"/> (0 = embeddings, i + 1 = after block i).</summary>
    void Observe(int layer, Tensor hidden);

    /// <summary>The final normalised hidden states, possibly rewritten (default: unchanged).</summary>
    Tensor Final(Tensor hidden) => hidden;
}
