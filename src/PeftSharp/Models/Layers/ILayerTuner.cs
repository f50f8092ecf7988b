using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>
/// What a tuning method (LoRA and its variants) attaches to a layer: it computes the layer's output from the
/// input, calling the layer's frozen base computation itself. Layers without a tuner run their base only.
/// </summary>
public interface ILayerTuner
{
    Tensor Forward(Tensor input);
}
