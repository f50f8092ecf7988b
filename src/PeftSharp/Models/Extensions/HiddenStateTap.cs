using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Extension point 5: per-layer hidden-state taps (side tuning, ladder side tuning). A tap sees the residual stream
/// after the embeddings (layer 0) and after each decoder block i (layer i + 1), then may rewrite the final normalised
/// hidden states (a side network's output merged into the backbone's). Taps run in the order they were added.
/// </summary>
public interface IHiddenStateTap
{
    /// <summary>
    /// Called once at the start of every forward, before <see cref="Observe"/> sees layer 0: the caller's cache (null
    /// without one; not yet extended by this forward) and attention mask [B, S] over the real tokens (null: all real).
    /// </summary>
    void Begin(KvCache? cache, Tensor? attentionMask) { }

    /// <summary>
    /// True when the tap needs no gradient through the backbone (ladder side tuning): while any such tap is added and
    /// gradients are enabled, the model runs its embeddings, blocks and final norm under <c>no_grad</c> (no backbone
    /// activations are kept for backward), and only <see cref="Observe"/> and <see cref="Final"/> record gradients.
    /// </summary>
    bool BackboneWithoutGrad => false;

    /// <summary>The residual stream [B, T, H] at <paramref name="layer"/> (0 = embeddings, i + 1 = after block i).</summary>
    void Observe(int layer, Tensor hidden);

    /// <summary>The final normalised hidden states, possibly rewritten (default: unchanged).</summary>
    Tensor Final(Tensor hidden) => hidden;
}
