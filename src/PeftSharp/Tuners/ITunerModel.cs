using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp.Modules;

namespace PeftSharp.Tuners;

/// <summary>One row of <c>peftsharp inspect</c>'s adapter table.</summary>
/// <param name="Method">lower-case method name ("lora", "dora", "adalora", "ia3").</param>
/// <param name="Size">the method's size knob as text ("8" for a rank, "-" when there is none).</param>
/// <param name="Layers">number of layers or hook points the adapter acts on.</param>
/// <param name="Parameters">the adapter's parameter count.</param>
public sealed record AdapterSummary(string Method, string Size, int Layers, long Parameters);

/// <summary>
/// The adapters of one method on one model (PEFT's <c>BaseTuner</c>: <c>LoraModel</c>, <c>IA3Model</c>, ...), driven by
/// <see cref="PeftModel"/>. Every adapter has a name; the active ones act in the forward; merged ones are folded into
/// the base weights. The methods below are what PeftModel and the command line need from every tuner.
/// </summary>
public interface ITunerModel
{
    /// <summary>The method (its peft_type, name and config loader).</summary>
    ITuner Tuner { get; }
    /// <summary>The language model the adapters act on.</summary>
    CausalLM Model { get; }

    /// <summary>Adapter names, in the order they were added.</summary>
    IReadOnlyList<string> Adapters { get; }
    /// <summary>The adapters that act in the forward, in order.</summary>
    IReadOnlyList<string> ActiveAdapters { get; }
    /// <summary>The config of adapter <paramref name="adapter"/>.</summary>
    /// <exception cref="PeftSharpException">No adapter of that name.</exception>
    PeftConfig ConfigOf(string adapter);

    /// <summary>Adds a new adapter from a config (PEFT's add_adapter / get_peft_model); it is not made active.</summary>
    void AddAdapter(string name, PeftConfig config, long? seed = null, bool trainable = true);

    /// <summary>Loads an adapter folder written by PEFT's save_pretrained (PEFT's load_adapter); it is not made active.</summary>
    void LoadAdapter(string dir, string name, bool trainable = false);

    /// <summary>Writes one adapter in PEFT's layout (a subfolder for names other than "default"); returns the folder.</summary>
    string SaveAdapter(string dir, string name, string? baseModelNameOrPath = null);

    /// <summary>Makes exactly these adapters of this tuner active (possibly none) and sets which parameters train.</summary>
    void SetAdapter(IReadOnlyList<string> names);

    /// <summary>Makes an adapter's parameters trainable (requires_grad) or frozen.</summary>
    /// <exception cref="PeftSharpException">No adapter of that name.</exception>
    void SetTrainable(string name, bool trainable);
    /// <summary>Removes an adapter and its parameters (PEFT's delete_adapter).</summary>
    /// <exception cref="PeftSharpException">No adapter of that name, or it is merged.</exception>
    void DeleteAdapter(string name);

    /// <summary>While the returned scope lives the tuner's adapters do not act (PEFT's disable_adapter()).</summary>
    IDisposable DisableAdapters();

    /// <summary>Null when adapters can be merged into the base weights, else the one-line reason ("... cannot be merged").</summary>
    string? MergeUnsupported { get; }

    /// <summary>Folds the given (default: active) adapters into the base weights; safe refuses non-finite results.</summary>
    void Merge(IReadOnlyList<string>? adapters = null, bool safe = false);
    /// <summary>Takes every merged adapter back out of the base weights, in reverse order of merging.</summary>
    void Unmerge();

    /// <summary>Removes every adapter of this tuner from the model (merged ones stay folded in).</summary>
    void Unload();

    /// <summary>Every adapter parameter with its model parameter name and adapter.</summary>
    IEnumerable<(string Name, Parameter Param, string Adapter)> AdapterParameters();

    /// <summary>Parameters that PEFT counts but that are not parameters of the model right now (inactive modules_to_save copies).</summary>
    long ExtraParameterCount { get; }

    /// <summary>The adapter's row of <c>peftsharp inspect</c>'s table.</summary>
    AdapterSummary Summary(string adapter);
}
