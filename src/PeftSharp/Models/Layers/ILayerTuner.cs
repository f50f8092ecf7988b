using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>
/// What a tuning method (LoRA and its variants, (IA)³) attaches to a <see cref="TunableLayer"/> (extension point 1): it
/// computes the layer's output from the input, calling <see cref="TunableLayer.BaseForward"/> for what lies beneath it
/// (the frozen layer, or an earlier-attached tuner). Layers without a tuner run their own computation only.
/// </summary>
public interface ILayerTuner
{
    /// <summary>
    /// The tuned layer's output for <paramref name="input"/>; reaches the layer beneath through <see cref="TunableLayer.BaseForward"/>.
    /// </summary>
    Tensor Forward(Tensor input);
}
