using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners;

/// <summary>
/// One PEFT method (LoRA, AdaLoRA, (IA)³, ...), as an entry of PEFT's <c>PEFT_TYPE_TO_CONFIG_MAPPING</c> /
/// <c>PEFT_TYPE_TO_TUNER_MAPPING</c>: the <c>peft_type</c> it reads and writes, its config class, and the tuner model
/// that holds its adapters on a <see cref="CausalLM"/>. A class implementing this interface with a public parameterless
/// constructor anywhere in the PeftSharp assembly is found by <see cref="TunerRegistry"/>; other assemblies call
/// <see cref="TunerRegistry.Register"/>.
/// </summary>
public interface ITuner
{
    /// <summary>PEFT's <c>peft_type</c> value ("LORA", "IA3").</summary>
    string PeftType { get; }

    /// <summary>The method's usual name in messages ("LoRA", "(IA)³").</summary>
    string Name { get; }

    /// <summary>Reads <c>adapter_config.json</c> of an adapter folder into this method's config class.</summary>
    PeftConfig LoadConfig(string adapterDir);

    /// <summary>A tuner model for <paramref name="model"/> without adapters yet (add or load them by name).</summary>
    ITunerModel Attach(CausalLM model);
}
