using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>The experts chosen for each token and their weights.</summary>
/// <param name="Probabilities">softmax over all experts [N, E] (float32; differentiable; the load-balancing loss reads it).</param>
/// <param name="Weights">the chosen experts' weights [N, k], summing to 1 per token.</param>
/// <param name="Experts">the chosen experts [N, k] (int64), best first.</param>
public sealed record RoutingDecision(Tensor Probabilities, Tensor Weights, Tensor Experts);

/// <summary>
/// Mixtral's (and MixLoRA's) top-k routing: softmax over all E logits, keep the k largest probabilities, renormalise
/// them to sum to 1 (the same as a softmax over the k chosen logits). <b>Ties</b>: among equal probabilities the
/// lower expert index ranks first (a stable descending sort), so the choice never depends on the backend's topk.
/// </summary>
public static class TopKRouting
{
    /// <summary>Routes tokens with logits [N, E] to <paramref name="topK"/> experts each.</summary>
    /// <exception cref="PeftSharpException">topK is not in 1..E.</exception>
    public static RoutingDecision Route(Tensor logits, int topK)
    {
        long e = logits.shape[^1];
        if (topK < 1 || topK > e) throw new PeftSharpException($"top_k is {topK}; it must be between 1 and num_experts ({e})");
        var probs = logits.to_type(ScalarType.Float32).softmax(-1);
        // A stable descending sort keeps equal values in index order: the lowest index wins a tie.
        var (sorted, order) = probs.detach().sort(-1, descending: true, stable: true);
        var experts = order.narrow(-1, 0, topK);
        var chosen = probs.gather(-1, experts);
        var weights = chosen.div(chosen.sum(-1, keepdim: true));
        return new RoutingDecision(probs, weights, experts);
    }
}
