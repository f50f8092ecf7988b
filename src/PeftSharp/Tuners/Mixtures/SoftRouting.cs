using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>
/// Dense soft routing (MoLoRA, MoV; Zadouri et al. 2023): every expert takes part, weighted by a softmax over all E
/// router logits, so no token is dropped and nothing needs dispatching.
/// </summary>
public static class SoftRouting
{
    /// <summary>The mixture weights [.., E] (float32, summing to 1 over the experts) for logits [.., E].</summary>
    public static Tensor Weights(Tensor logits) => logits.to_type(ScalarType.Float32).softmax(-1);
}
