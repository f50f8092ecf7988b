using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Mixtures.MoV;

/// <summary>MoV in the tuner registry (<c>peft_type: "MOV"</c>).</summary>
public sealed class MoVTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => MixturePeftTypes.MoV;
    /// <inheritdoc/>
    public string Name => "MoV";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => MoVConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => MoVModel.Attach(model);
}
