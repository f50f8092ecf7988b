using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Mixtures.MixLora;

/// <summary>MixLoRA in the tuner registry (<c>peft_type: "MIXLORA"</c>).</summary>
public sealed class MixLoraTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => MixturePeftTypes.MixLora;
    /// <inheritdoc/>
    public string Name => "MixLoRA";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => MixLoraConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => MixLoraModel.Attach(model);
}
