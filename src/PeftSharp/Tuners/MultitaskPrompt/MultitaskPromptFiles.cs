using PeftSharp.Peft;
using PeftSharp.Tensors;
using PeftSharp.Tuners.Prompts;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.MultitaskPrompt;

/// <summary>
/// PEFT's on-disk format for multitask prompt tuning: <c>adapter_config.json</c> (peft_type MULTITASK_PROMPT_TUNING)
/// and <c>adapter_model.safetensors</c> with the three tensors of <c>MultitaskPromptEmbedding._get_adapter_state_dict</c>:
/// <c>prompt_embeddings</c> [N, token_dim] (the shared prompt, <c>embedding.weight</c>), <c>prefix_task_cols</c>
/// [num_tasks, N, num_ranks] and <c>prefix_task_rows</c> [num_tasks, num_ranks, token_dim], unprefixed.
/// </summary>
public static class MultitaskPromptFiles
{
    /// <summary>The shared prompt's tensor name.</summary>
    public const string PromptEmbeddings = PromptFiles.TensorName;
    /// <summary>The column factors' tensor name.</summary>
    public const string TaskCols = "prefix_task_cols";
    /// <summary>The row factors' tensor name.</summary>
    public const string TaskRows = "prefix_task_rows";

    /// <summary>Writes one adapter in PEFT's layout (a subfolder for names other than "default"); returns the folder.</summary>
    public static string Save(MultitaskPromptModel model, string dir, string adapter = AdapterFiles.DefaultAdapter, string? baseModelNameOrPath = null)
    {
        var config = model.Configs[adapter];
        var module = model.TaskModule(adapter);
        string folder = AdapterFiles.FolderFor(dir, adapter);
        using var prompt = module.EmbeddingWeight.detach().cpu();
        using var cols = module.PrefixTaskCols.detach().cpu();
        using var rows = module.PrefixTaskRows.detach().cpu();
        AdapterFiles.WriteFolder(folder,
            [new(TaskCols, cols), new(TaskRows, rows), new(PromptEmbeddings, prompt)], config, baseModelNameOrPath);
        return folder;
    }

    /// <summary>Loads a PEFT multitask prompt-tuning folder as a new adapter (PEFT's load_adapter); it is not made active.</summary>
    public static void LoadAdapter(MultitaskPromptModel model, string dir, string adapter, bool trainable = false)
    {
        string weights = AdapterFiles.WeightsPath(dir);
        string configPath = Path.Combine(dir, PeftConfig.ConfigFileName);
        var config = MultitaskPromptTuningConfig.Load(dir);
        model.AddAdapterCore(adapter, config, seed: null, trainable, inference: true, source: configPath);
        try
        {
            var module = model.TaskModule(adapter);
            AdapterFiles.ReadTensors(weights, new Dictionary<string, Tensor>
            {
                [PromptEmbeddings] = module.EmbeddingWeight,
                [TaskCols] = module.PrefixTaskCols,
                [TaskRows] = module.PrefixTaskRows,
            });
        }
        catch
        {
            model.DeleteAdapter(adapter);
            throw;
        }
    }

    /// <summary>
    /// PEFT's source-task inits: reads <c>prompt_tuning_init_state_dict_path</c> (an MPT adapter's safetensors file, or
    /// its folder) and copies the shared prompt and, for AVERAGE_SOURCE_TASKS / EXACT_SOURCE_TASK, the mean or one task's
    /// matrices into <paramref name="module"/> (which then needs num_tasks 1, as PEFT's strict load).
    /// </summary>
    internal static void InitFromSource(MultitaskPromptEmbedding module, MultitaskPromptTuningConfig config)
    {
        string path = config.PromptTuningInitStateDictPath!;
        if (Directory.Exists(path)) path = AdapterFiles.WeightsPath(path);
        else if (!File.Exists(path))
            throw new PeftSharpException($"prompt_tuning_init_state_dict_path \"{path}\": no such file or folder");
        else if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new PeftSharpException($"prompt_tuning_init_state_dict_path \"{path}\": PeftSharp reads .safetensors state dicts only (not pickled torch files)");
        using var file = SafetensorsFile.Open(path);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        module.EmbeddingWeight.copy_(Read(file, path, PromptEmbeddings, module.EmbeddingWeight.shape));
        if (config.PromptTuningInitMode == MultitaskPromptTuningInit.OnlySourceShared) return;
        var cols = Read(file, path, TaskCols, null);
        var rows = Read(file, path, TaskRows, null);
        if (config.PromptTuningInitMode == MultitaskPromptTuningInit.AverageSourceTasks)
        {
            cols = cols.mean([0L], keepdim: true);
            rows = rows.mean([0L], keepdim: true);
        }
        else
        {
            int task = config.PromptTuningInitTask!.Value;
            if (task >= cols.shape[0])
                throw new PeftSharpException($"prompt_tuning_init_task {task}: the source \"{path}\" has {cols.shape[0]} tasks (ids 0 … {cols.shape[0] - 1})");
            cols = cols[task].unsqueeze(0);
            rows = rows[task].unsqueeze(0);
        }
        Copy(module.PrefixTaskCols, cols, path, TaskCols, config);
        Copy(module.PrefixTaskRows, rows, path, TaskRows, config);
    }

    static Tensor Read(SafetensorsFile file, string path, string name, long[]? shape)
    {
        if (!file.Tensors.TryGetValue(name, out var info))
            throw new PeftSharpException($"{path}: missing tensor '{name}' (expected a multitask prompt-tuning state dict)");
        if (shape is not null && !info.Shape.SequenceEqual(shape))
            throw new PeftSharpException($"{path}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}] but this adapter needs [{string.Join(", ", shape)}] (num_virtual_tokens × token_dim)");
        return file.Read(name, dtype: ScalarType.Float32);
    }

    static void Copy(Tensor target, Tensor source, string path, string name, MultitaskPromptTuningConfig config)
    {
        if (!source.shape.SequenceEqual(target.shape))
            throw new PeftSharpException(
                $"{path}: tensor '{name}' gives [{string.Join(", ", source.shape)}] after {config.PromptTuningInitMode} but this adapter has [{string.Join(", ", target.shape)}] (the target needs num_tasks 1 and the source's num_virtual_tokens and num_ranks)");
        target.copy_(source.to(target.device));
    }
}
