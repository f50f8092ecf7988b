using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Mixtures.MoLora;

/// <summary>MoLoRA in the tuner registry (<c>peft_type: "MOLORA"</c>).</summary>
public sealed class MoLoraTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => MixturePeftTypes.MoLora;
    /// <inheritdoc/>
    public string Name => "MoLoRA";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => MoLoraConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => MoLoraModel.Attach(model);
}
