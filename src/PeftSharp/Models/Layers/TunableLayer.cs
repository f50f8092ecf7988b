using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>
/// A layer a tuning method can attach to (Linear, Embedding): its forward goes through the attached
/// <see cref="ILayerTuner"/> when there is one, which calls <see cref="BaseForward"/> for the frozen computation.
/// Tuners register their parameters as submodules of the layer (PEFT's names) and remove them on unload.
/// </summary>
public abstract class TunableLayer(string name) : nn.Module<Tensor, Tensor>(name)
{
    /// <summary>The tuning method attached to this layer (LoRA, ...), or null for the plain layer.</summary>
    public ILayerTuner? Tuner { get; set; }

    public override Tensor forward(Tensor input) => Tuner is null ? BaseForward(input) : Tuner.Forward(input);

    /// <summary>The layer's own (frozen) computation.</summary>
    public abstract Tensor BaseForward(Tensor input);

    /// <summary>Drops a registered submodule (TorchSharp has no public unregister).</summary>
    public void RemoveSubmodule(string name)
    {
        if (_internal_submodules.ContainsKey(name)) _internal_submodules.Remove(name);
    }
}
