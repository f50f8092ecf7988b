using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.DyLora;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>
/// A base model with the adapters given by repeated <c>--adapter</c> options, all active (as PEFT sums them), each loaded
/// by the tuner its <c>peft_type</c> names (<see cref="PeftModel"/>); adapters of different methods compose.
/// </summary>
public sealed class ModelSession : IDisposable
{
    public required CausalLM Model { get; init; }
    /// <summary>The adapters, or null without --adapter.</summary>
    public PeftModel? Peft { get; init; }
    /// <summary>The LoRA tuner model when LoRA (or DoRA, DyLoRA) adapters are loaded.</summary>
    public LoraModel? Lora => Peft?.Get<LoraModel>();

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

    public static Option<int?> RankOption() => new("--rank")
    {
        Description = "run the adapters at rank b ≤ r (DyLoRA: first b components, scaling α/b)",
    };

    public static ModelSession Load(string modelDir, IReadOnlyList<string> adapterDirs, ScalarType dtype, Device device, int? rank = null,
                                    Quantization.BitsAndBytesConfig? quantization = null)
    {
        var model = ModelLoader.Load(modelDir, dtype, device, quantization);
        try
        {
            if (adapterDirs.Count == 0)
            {
                if (rank is not null) throw new PeftSharpException("--rank needs --adapter");
                return new ModelSession { Model = model };
            }
            var names = AdapterNames(adapterDirs);
            var peft = PeftModel.Load(model, adapterDirs, names);
            if (rank is not null)
            {
                var other = peft.Tuners.FirstOrDefault(t => t is not LoraModel);
                if (other is not null) throw new PeftSharpException($"--rank: not supported for {other.Tuner.Name} adapters (only LoRA and DyLoRA run at a truncated rank)");
                peft.Get<LoraModel>()!.SetRank(rank);
            }
            model.eval();
            return new ModelSession { Model = model, Peft = peft };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Folds every loaded adapter into the base weights and returns the plain model (one line when a method cannot merge).</summary>
    public CausalLM MergeAndUnload(bool safe) =>
        (Peft ?? throw new PeftSharpException("--adapter: no adapter to merge")).MergeAndUnload(safe);

    public void Dispose() => Model.Dispose();
}
