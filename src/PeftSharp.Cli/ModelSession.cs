using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>A base model with the adapters given by repeated <c>--adapter</c> options, all active (as PEFT sums them).</summary>
public sealed class ModelSession : IDisposable
{
    public required CausalLM Model { get; init; }
    public LoraModel? Lora { get; init; }

    public static Option<string[]> AdapterOption() => new("--adapter")
    {
        Description = "PEFT adapter folder (adapter_config.json + adapter_model.safetensors); repeat to load several, all active",
        AllowMultipleArgumentsPerToken = false,
        DefaultValueFactory = _ => [],
    };

    /// <summary>Names for the adapters: the first is "default" (as PEFT), the others their folder names, made unique.</summary>
    public static IReadOnlyList<string> AdapterNames(IReadOnlyList<string> dirs)
    {
        var names = new List<string>();
        for (int i = 0; i < dirs.Count; i++)
        {
            string name = i == 0 ? AdapterFiles.DefaultAdapter : new string(Path.GetFileName(Path.TrimEndingDirectorySeparator(dirs[i]))
                .Select(c => char.IsLetterOrDigit(c) || c == '_' || c == '-' ? c : '_').ToArray());
            if (name.Length == 0) name = "adapter";
            string unique = name;
            for (int k = 2; names.Contains(unique); k++) unique = $"{name}_{k}";
            names.Add(unique);
        }
        return names;
    }

    public static ModelSession Load(string modelDir, IReadOnlyList<string> adapterDirs, ScalarType dtype, Device device,
                                    Quantization.BitsAndBytesConfig? quantization = null)
    {
        var model = ModelLoader.Load(modelDir, dtype, device, quantization);
        try
        {
            if (adapterDirs.Count == 0) return new ModelSession { Model = model };
            var names = AdapterNames(adapterDirs);
            var lora = AdapterFiles.Load(model, adapterDirs[0], names[0]);
            for (int i = 1; i < adapterDirs.Count; i++) AdapterFiles.LoadAdapter(lora, adapterDirs[i], names[i]);
            lora.SetAdapter([.. names]);
            model.eval();
            return new ModelSession { Model = model, Lora = lora };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public void Dispose() => Model.Dispose();
}
