using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>Gradient-norm clipping as torch.nn.utils.clip_grad_norm_ (L2, one norm over all gradients together).</summary>
public static class GradientClipping
{
    /// <summary>
    /// Scales every gradient by min(1, maxNorm / (total + 1e-6)) where total is the L2 norm of all gradients
    /// concatenated, and returns that total (before clipping). Parameters without a gradient are ignored.
    /// With <paramref name="maxNorm"/> ≤ 0 or infinite, only measures. The norm is accumulated in float32.
    /// </summary>
    public static double ClipGradNorm(IEnumerable<Parameter> parameters, double maxNorm)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return 0.0;
        // The norm of the per-tensor norms is the norm of everything (torch computes it the same way).
        var norms = grads.Select(g => g.to_type(ScalarType.Float32).norm()).ToArray();
        var total = stack(norms).norm();
        double totalNorm = total.item<float>();
        if (maxNorm > 0 && !double.IsPositiveInfinity(maxNorm))
        {
            // torch multiplies even when the coefficient clamps to 1 (a no-op); skipping it is the same result.
            double coefficient = maxNorm / (totalNorm + 1e-6);
            if (coefficient < 1.0)
            {
                var c = total.add(1e-6).reciprocal_().mul_(maxNorm).clamp_max_(1.0);
                foreach (var g in grads) g.mul_(c.to_type(g.dtype));
            }
        }
        return totalNorm;
    }
}
