using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.AdaLora;
using PeftSharp.Tuners.DyLora;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>A base model with the adapters given by repeated <c>--adapter</c> options, all active (as PEFT sums them).</summary>
public sealed class ModelSession : IDisposable
{
    public required CausalLM Model { get; init; }
    public LoraModel? Lora { get; init; }
    /// <summary>Set instead of <see cref="Lora"/> when the adapters are AdaLoRA ones (peft_type "ADALORA").</summary>
    public AdaLoraModel? AdaLora { get; init; }
    /// <summary>Set instead when the adapters are of other registered methods (bottleneck adapters, ...), loaded through PeftModel.</summary>
    public PeftModel? Peft { get; init; }

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
            var tuners = adapterDirs.Select(TunerRegistry.ForFolder).ToList();
            if (tuners.Any(t => t.PeftType is not (PeftTypes.Lora or PeftTypes.AdaLora)))
            {
                if (rank is not null) throw new PeftSharpException("--rank: only for LoRA adapters");
                var peft = PeftModel.Load(model, adapterDirs, names);
                model.eval();
                return new ModelSession { Model = model, Peft = peft };
            }
            var types = tuners.Select(t => t.PeftType).ToList();
            if (types.Distinct().Count() > 1)
                throw new PeftSharpException($"--adapter: cannot mix adapter types ({string.Join(", ", adapterDirs.Select((d, i) => $"{d}: {types[i]}"))})");
            if (types[0] == PeftTypes.AdaLora)
            {
                if (rank is not null) throw new PeftSharpException("--rank: not supported for AdaLoRA adapters");
                var ada = AdaLoraFiles.Load(model, adapterDirs[0], names[0]);
                for (int i = 1; i < adapterDirs.Count; i++) AdaLoraFiles.LoadAdapter(ada, adapterDirs[i], names[i]);
                ada.SetAdapter([.. names]);
                model.eval();
                return new ModelSession { Model = model, AdaLora = ada };
            }
            var lora = AdapterFiles.Load(model, adapterDirs[0], names[0]);
            for (int i = 1; i < adapterDirs.Count; i++) AdapterFiles.LoadAdapter(lora, adapterDirs[i], names[i]);
            lora.SetAdapter([.. names]);
            if (rank is not null) lora.SetRank(rank);
            model.eval();
            return new ModelSession { Model = model, Lora = lora };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Folds every loaded adapter into the base weights and returns the plain model.</summary>
    public CausalLM MergeAndUnload(bool safe) =>
        Peft?.MergeAndUnload(safe) ?? (CausalLM)(AdaLora?.MergeAndUnload(safe) ?? Lora?.MergeAndUnload(safe) ?? throw new PeftSharpException("--adapter: no adapter to merge"));

    public void Dispose() => Model.Dispose();
}
