using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>
/// The auxiliary load-balancing loss of Switch Transformers (Fedus et al. 2021) in Mixtral's top-k form
/// (transformers' <c>load_balancing_loss_func</c>): over all routed tokens of all layers together,
/// <c>L = E · Σ_e f_e · P_e</c>, with <c>f_e</c> the fraction of (token, slot) choices that went to expert e
/// (Σ_e f_e = k; not differentiable) and <c>P_e</c> the mean router probability of expert e. Perfectly even routing
/// gives L = k; everything on one expert gives L = E·k·P.
/// </summary>
public static class LoadBalancingLoss
{
    /// <summary>The loss for routing decisions (probabilities [N, E] and chosen experts [N, k]) of one or more layers.</summary>
    public static Tensor Compute(IReadOnlyList<(Tensor Probabilities, Tensor Experts)> layers)
    {
        if (layers.Count == 0) throw new PeftSharpException("load-balancing loss: no routing decisions were recorded");
        using var scope = NewDisposeScope();
        long e = layers[0].Probabilities.shape[^1];
        var probs = cat(layers.Select(l => l.Probabilities.reshape(-1, e)).ToList(), 0);            // [N, E]
        var experts = cat(layers.Select(l => l.Experts.reshape(-1, l.Experts.shape[^1])).ToList(), 0); // [N, k]
        long n = probs.shape[0];
        var counts = zeros([e], ScalarType.Float32, probs.device)
            .index_add(0, experts.reshape(-1), ones([experts.numel()], ScalarType.Float32, probs.device), 1.0);
        var fraction = counts.div(n);                                                          // f_e
        var meanProb = probs.mean([0L]);                                                       // P_e
        return fraction.mul(meanProb).sum().mul(e).MoveToOuterDisposeScope();
    }
}
