using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.SideTuning;

/// <summary>Ladder side tuning in the tuner registry (<c>peft_type: "LST"</c>).</summary>
public sealed class LstTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => SideTuningPeftTypes.Lst;
    /// <inheritdoc/>
    public string Name => "ladder side tuning";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => LstConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => new SideTuningModel(model, this);
}

/// <summary>Side tuning in the tuner registry (<c>peft_type: "SIDE_TUNING"</c>).</summary>
public sealed class SideTuningTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => SideTuningPeftTypes.SideTuning;
    /// <inheritdoc/>
    public string Name => "side tuning";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => SideTuningConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => new SideTuningModel(model, this);
}
