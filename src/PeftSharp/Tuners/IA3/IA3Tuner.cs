using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.IA3;

/// <summary>(IA)³ in the tuner registry (<c>peft_type: "IA3"</c>).</summary>
public sealed class IA3Tuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => PeftTypes.IA3;
    /// <inheritdoc/>
    public string Name => "(IA)³";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => IA3Config.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => IA3Model.Attach(model);
}
