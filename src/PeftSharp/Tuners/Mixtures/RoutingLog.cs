using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>
/// What the routers of one tuner model write down while they run: usage statistics when <see cref="Statistics"/> is
/// set, and, while <see cref="RecordForLoss"/> is on and the model trains with autograd, each top-k router's input so
/// that the load-balancing loss can be computed after the forward (<see cref="AuxiliaryLoss"/>).
/// </summary>
/// <remarks>
/// The trainer adds extra loss terms after the batches' backward passes, when the forward graph is gone; the loss is
/// therefore recomputed from the detached router inputs with the live router weights. Its gradient reaches the router
/// weights (what balances the routing) but not the layers below the router, unlike Mixtral's in-graph loss.
/// </remarks>
public sealed class RoutingLog
{
    readonly List<(ExpertRouter Router, Tensor Input, int TopK)> inputs = [];

    /// <summary>Usage statistics to add to, or null.</summary>
    public RouterStatistics? Statistics { get; set; }

    /// <summary>Whether top-k routers keep their inputs for <see cref="AuxiliaryLoss"/> (training only).</summary>
    public bool RecordForLoss { get; set; }

    /// <summary>Number of router calls kept for the loss.</summary>
    public int Recorded => inputs.Count;

    /// <summary>Called by a router's owner after it routed <paramref name="input"/> [N, in].</summary>
    public void Record(string label, ExpertRouter router, Tensor input, RoutingDecision decision, int topK, bool training)
    {
        Statistics?.Add(label, decision.Probabilities, decision.Experts);
        if (RecordForLoss && training && is_grad_enabled())
        {
            var kept = input.detach().clone();
            kept.DetachFromDisposeScope();
            inputs.Add((router, kept, topK));
        }
    }

    /// <summary>The load-balancing loss over every router input kept since <see cref="Clear"/>, or null if none.</summary>
    public Tensor? AuxiliaryLoss()
    {
        if (inputs.Count == 0) return null;
        using var scope = NewDisposeScope();
        var decisions = new List<(Tensor, Tensor)>();
        foreach (var (router, input, k) in inputs)
        {
            var d = TopKRouting.Route(router.Logits(input), k);
            decisions.Add((d.Probabilities, d.Experts));
        }
        return LoadBalancingLoss.Compute(decisions).MoveToOuterDisposeScope();
    }

    /// <summary>Drops the kept router inputs (at the start of each optimizer step).</summary>
    public void Clear()
    {
        foreach (var (_, input, _) in inputs) input.Dispose();
        inputs.Clear();
    }
}
