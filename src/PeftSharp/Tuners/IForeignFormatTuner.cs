namespace PeftSharp.Tuners;

/// <summary>
/// A tuner whose adapter folders are not PEFT's (no <c>peft_type</c> in adapter_config.json), e.g. AdapterHub's
/// bottleneck adapters. <see cref="TunerRegistry.ForFolder"/> asks these tuners first.
/// </summary>
public interface IForeignFormatTuner : ITuner
{
    /// <summary>True when the folder holds an adapter in this tuner's own format.</summary>
    bool Recognizes(string adapterDir);
}
