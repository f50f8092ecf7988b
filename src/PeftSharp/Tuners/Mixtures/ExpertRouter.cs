using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>
/// A router: one bias-free linear map from a token's hidden state to one logit per expert, <c>weight</c> [E, in]
/// (MixLoRA's <c>moe_gate</c>, Mixtral's <c>gate</c>). Kept in float32 whatever the model's dtype.
/// </summary>
public sealed class ExpertRouter : nn.Module
{
    /// <summary>The router weight [num_experts, in_features].</summary>
    public Parameter weight;

    /// <summary>A router for <paramref name="experts"/> experts on <paramref name="inFeatures"/> inputs, drawn from N(0, initRange²).</summary>
    public ExpertRouter(int experts, long inFeatures, double initRange, Device device, Generator? generator = null) : base(nameof(ExpertRouter))
    {
        var w = initRange > 0
            ? randn([experts, inFeatures], ScalarType.Float32, generator: generator).mul_(initRange)
            : zeros([experts, inFeatures], ScalarType.Float32);
        weight = new Parameter(w.to(device));
        RegisterComponents();
    }

    /// <summary>Number of experts.</summary>
    public int Experts => (int)weight.shape[0];

    /// <summary>Router logits [.., E] in float32 for hidden states [.., in].</summary>
    public Tensor Logits(Tensor x) => nn.functional.linear(x.to_type(ScalarType.Float32), weight);
}
