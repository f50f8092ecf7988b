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
        Description = "PEFT adapter folder (adapter_config.json + adapter_model.safetensors), or NAME=DIR to name it; repeat to load several, all active unless --active-adapter",
        AllowMultipleArgumentsPerToken = false,
        DefaultValueFactory = _ => [],
    };

    /// <summary><c>--task-id</c>: the task of every sequence, for task-conditioned adapters (multitask prompt tuning).</summary>
    public static Option<int?> TaskIdOption() =>
        new Option<int?>("--task-id") { Description = "task id for multitask adapters (MPT): every sequence is run as this task" }.AtLeast(0);

    /// <summary>Makes <paramref name="taskId"/> the task of every forward of <paramref name="model"/> (nothing when null).</summary>
    public static IDisposable? UseTaskId(CausalLM model, int? taskId)
    {
        if (taskId is not int id) return null;
        var ids = tensor(new long[] { id });
        var handle = model.Extensions.UseTaskIds(ids);
        return new TaskIdHandle(handle, ids);
    }

    sealed class TaskIdHandle(IDisposable handle, Tensor ids) : IDisposable
    {
        public void Dispose()
        {
            handle.Dispose();
            ids.Dispose();
        }
    }

    public static Option<string[]> ActiveAdapterOption() => new("--active-adapter")
    {
        Description = "the adapter(s) to run, by name (NAME of --adapter NAME=DIR; \"default\" for the first unnamed one); repeat or comma-separate for several",
        AllowMultipleArgumentsPerToken = false,
        DefaultValueFactory = _ => [],
    };

    /// <summary>
    /// Splits --adapter values into names and folders: NAME=DIR names the adapter (NAME of letters, digits, '_', '-', '.');
    /// a plain folder (or one that exists under the whole text) gets <see cref="AdapterNames"/>' name.
    /// </summary>
    public static (IReadOnlyList<string> Names, IReadOnlyList<string> Dirs) ParseAdapters(IReadOnlyList<string> values)
    {
        var given = new string?[values.Count];
        var dirs = new string[values.Count];
        for (int i = 0; i < values.Count; i++)
        {
            string v = values[i];
            int eq = v.IndexOf('=');
            bool named = eq > 0 && !Directory.Exists(v) && v[..eq].All(c => char.IsLetterOrDigit(c) || c is '_' or '-' or '.');
            if (named && eq == v.Length - 1) throw new PeftSharpException($"--adapter: expected NAME=DIR, got \"{v}\" (no folder after '=')");
            given[i] = named ? v[..eq] : null;
            dirs[i] = named ? v[(eq + 1)..] : v;
        }
        var automatic = AdapterNames(dirs);
        var names = new List<string>();
        for (int i = 0; i < values.Count; i++)
        {
            string name = given[i] ?? automatic[i];
            if (names.Contains(name)) throw new PeftSharpException($"--adapter: the name \"{name}\" is given twice; name each adapter once (NAME=DIR)");
            names.Add(name);
        }
        return (names, dirs);
    }

    /// <summary>The names of --active-adapter (repeated or comma-separated), or null when none was given.</summary>
    public static IReadOnlyList<string>? ParseActive(IReadOnlyList<string> values)
    {
        var names = values.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();
        return names.Count == 0 ? null : names;
    }

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

    public static Option<int?> RankOption() => new Option<int?>("--rank")
    {
        Description = "run the adapters at rank b ≤ r (DyLoRA: first b components, scaling α/b)",
    }.AtLeast(1);

    /// <param name="adapterArgs">--adapter values: folders or NAME=DIR (<see cref="ParseAdapters"/>).</param>
    /// <param name="active">--active-adapter names; null: every adapter is active.</param>
    public static ModelSession Load(string modelDir, IReadOnlyList<string> adapterArgs, ScalarType dtype, Device device, int? rank = null,
                                    Quantization.BitsAndBytesConfig? quantization = null, IReadOnlyList<string>? active = null)
    {
        if (active is not null && adapterArgs.Count == 0) throw new PeftSharpException("--active-adapter needs --adapter");
        var (names, dirs) = ParseAdapters(adapterArgs);
        var model = ModelLoader.Load(modelDir, dtype, device, quantization);
        try
        {
            if (adapterArgs.Count == 0)
            {
                if (rank is not null) throw new PeftSharpException("--rank needs --adapter");
                return new ModelSession { Model = model };
            }
            var peft = new PeftModel(model);
            for (int i = 0; i < dirs.Count; i++) peft.LoadAdapter(dirs[i], names[i]);
            foreach (var name in active ?? [])
                if (!names.Contains(name)) throw new PeftSharpException($"--active-adapter: no adapter named \"{name}\" (loaded: {string.Join(", ", names)})");
            try { peft.SetAdapter([.. active ?? names]); }
            catch (PeftSharpException e) when (active is null)
            {
                // Soft prompts of one method run one at a time (as PEFT): say how to choose.
                throw new PeftSharpException($"{e.Message}; choose with --active-adapter NAME (name them with --adapter NAME=DIR)");
            }
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
