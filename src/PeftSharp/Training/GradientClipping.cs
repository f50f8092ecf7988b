using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>Gradient-norm clipping: libtorch's own torch::nn::utils::clip_grad_norm_ (L2, one norm over all gradients together).</summary>
public static class GradientClipping
{
    /// <summary>
    /// Scales every gradient by min(1, maxNorm / (total + 1e-6)), where total is the L2 norm of all gradients
    /// concatenated, and returns that total (before clipping). Parameters without a gradient are ignored.
    /// With <paramref name="maxNorm"/> ≤ 0, only measures.
    /// </summary>
    public static double ClipGradNorm(IEnumerable<Parameter> parameters, double maxNorm) =>
        // An infinite limit makes the coefficient clamp to 1: the gradients are left as they are.
        nn.utils.clip_grad_norm_(parameters, maxNorm > 0 ? maxNorm : double.PositiveInfinity);
}
