namespace PeftSharp.Tuners.Mixtures;

/// <summary>A tuner model whose adapters route tokens to experts (MixLoRA, MoLoRA, MoV): where its routers write down what they did.</summary>
public interface IMixtureTunerModel : ITunerModel
{
    /// <summary>The routing log of every router of this tuner model.</summary>
    RoutingLog Log { get; }
}
