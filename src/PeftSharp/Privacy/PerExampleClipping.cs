using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Privacy;

/// <summary>DP-SGD's clipping: each example's whole gradient (all parameters together) scaled to an L2 norm of at most C.</summary>
public static class PerExampleClipping
{
    /// <summary>
    /// The L2 norm of each example's gradient over all parameters together: √(Σ_p ‖g_{n,p}‖²), as float32 [N].
    /// </summary>
    public static Tensor Norms(IReadOnlyDictionary<Parameter, Tensor> perExample)
    {
        Tensor? sq = null;
        foreach (var g in perExample.Values)
        {
            var s = g.to_type(ScalarType.Float32).pow(2).flatten(1).sum(1);
            sq = sq is null ? s : sq.add(s);
        }
        return (sq ?? throw new ArgumentException("no per-example gradients", nameof(perExample))).sqrt();
    }

    /// <summary>
    /// Adds Σ_n min(1, C/(‖g_n‖ + 1e-6))·g_n to <paramref name="sums"/> (created as zeros on first use; Opacus' clip
    /// factor) and returns the per-example norms before clipping.
    /// </summary>
    public static Tensor ClipAndAccumulate(IReadOnlyDictionary<Parameter, Tensor> perExample, double maxNorm, Dictionary<Parameter, Tensor> sums)
    {
        if (!(maxNorm > 0)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "the clipping norm must be positive");
        using var _ = no_grad();
        var norms = Norms(perExample);
        var factor = norms.add(1e-6).reciprocal().mul(maxNorm).clamp_max(1.0);
        foreach (var (p, g) in perExample)
        {
            var shape = new long[g.dim()];
            Array.Fill(shape, 1L);
            shape[0] = g.shape[0];
            var clipped = g.to_type(ScalarType.Float32).mul(factor.view(shape)).sum(dim: 0);
            if (sums.TryGetValue(p, out var old))
            {
                old.add_(clipped);
            }
            else
            {
                var start = clipped.clone();
                start.DetachFromDisposeScope();
                sums[p] = start;
            }
        }
        return norms;
    }
}
