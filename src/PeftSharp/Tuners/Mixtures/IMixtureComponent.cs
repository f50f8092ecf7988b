using TorchSharp.Modules;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>
/// One piece of one mixture adapter attached to the model (a MixLoRA layer's experts and router, an attention LoRA, a
/// MoLoRA or MoV linear): its parameters by model parameter name, whether it acts, and how it is removed.
/// </summary>
public interface IMixtureComponent
{
    /// <summary>The adapter it belongs to.</summary>
    string Adapter { get; }
    /// <summary>Its parameters with their names in the model's <c>named_parameters()</c>.</summary>
    IEnumerable<(string Name, Parameter Param)> NamedParameters();
    /// <summary>Whether its adapter is active (inactive pieces pass their input through).</summary>
    bool Active { get; set; }
    /// <summary>While true the piece does nothing (PEFT's disable_adapter()).</summary>
    bool Disabled { get; set; }
    /// <summary>Removes the piece from the model and frees its parameters.</summary>
    void Detach();
}
