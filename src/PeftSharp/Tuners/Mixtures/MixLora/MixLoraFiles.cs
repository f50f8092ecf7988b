namespace PeftSharp.Tuners.Mixtures.MixLora;

/// <summary>
/// The reference MixLoRA code's adapter folder: <c>adapter_config.json</c> (<see cref="MixLoraConfig"/>, peft_type
/// "MIXLORA") and the weights under keys starting <c>mixlora.layers.{i}.</c> (no <c>base_model.model.</c> prefix), one
/// tensor per expert. The reference writes them to a pickled <c>adapter_model.bin</c>; PeftSharp reads and writes the same
/// keys in <c>adapter_model.safetensors</c> and refuses pickles (convert with safetensors' <c>save_file(torch.load(...))</c>).
/// </summary>
public static class MixLoraFiles
{
    /// <summary>The start of every weight key.</summary>
    public const string KeyPrefix = "mixlora.layers.";
}
