using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>
/// Extension point 1: a layer a tuning method can attach to (Linear, Embedding). Its forward goes through the attached
/// <see cref="ILayerTuner"/>s, which call <see cref="BaseForward"/> for what lies beneath them. Several tuners may
/// attach to one layer (a mixed model: LoRA over (IA)³); the one attached last is outermost, and its BaseForward is
/// the next one's output, down to the layer's own computation. Tuners register their parameters as submodules of the
/// layer (PEFT's names) and remove them on unload.
/// </summary>
public abstract class TunableLayer(string name) : nn.Module<Tensor, Tensor>(name)
{
    readonly List<ILayerTuner> tuners = [];
    int running = -1; // index of the tuner whose Forward is running, -1 outside

    /// <summary>
    /// The outermost tuner attached to this layer, or null for the plain layer. Setting it makes that the only tuner
    /// (null removes all); methods that may share a layer use <see cref="AddTuner"/> / <see cref="RemoveTuner"/>.
    /// </summary>
    public ILayerTuner? Tuner
    {
        get => tuners.Count == 0 ? null : tuners[^1];
        set
        {
            tuners.Clear();
            if (value is not null) tuners.Add(value);
        }
    }

    /// <summary>Tuners on this layer, innermost first.</summary>
    public IReadOnlyList<ILayerTuner> Tuners => tuners;

    /// <summary>Attaches a tuner outside those already attached.</summary>
    public void AddTuner(ILayerTuner tuner)
    {
        if (!tuners.Contains(tuner)) tuners.Add(tuner);
    }

    /// <summary>Detaches a tuner; the others stay attached.</summary>
    public void RemoveTuner(ILayerTuner tuner) => tuners.Remove(tuner);

    /// <summary>The outermost tuner's output, or the layer's own computation when none is attached.</summary>
    public override Tensor forward(Tensor input) => tuners.Count == 0 ? LayerForward(input) : Run(tuners.Count - 1, input);

    /// <summary>
    /// What lies beneath the running tuner: the next inner tuner's output, or the layer's own (frozen) computation.
    /// Called outside any tuner, the layer's own computation.
    /// </summary>
    public Tensor BaseForward(Tensor input) => running <= 0 ? LayerForward(input) : Run(running - 1, input);

    Tensor Run(int index, Tensor input)
    {
        int saved = running;
        running = index;
        try { return tuners[index].Forward(input); }
        finally { running = saved; }
    }

    /// <summary>The layer's own computation (x·Wᵀ + b, a table lookup).</summary>
    protected abstract Tensor LayerForward(Tensor input);

    /// <summary>Drops a registered submodule (TorchSharp has no public unregister).</summary>
    public void RemoveSubmodule(string name)
    {
        if (_internal_submodules.ContainsKey(name)) _internal_submodules.Remove(name);
    }

    /// <summary>Drops a parameter a tuner registered directly on the layer (LLM-Adapters' <c>adapter_scaling</c>).</summary>
    public void RemoveParameter(string name)
    {
        if (_internal_params.ContainsKey(name)) _internal_params.Remove(name);
    }
}
