using PeftSharp.Models;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Peft;

/// <summary>
/// Hugging Face PEFT's on-disk adapter format (what every tuner shares here; LoRA's key mapping is in
/// Tuners/Lora/AdapterFiles.Lora.cs): <c>adapter_config.json</c> plus <c>adapter_model.safetensors</c>
/// whose keys are the model's parameter names under <c>base_model.model.</c> with the adapter name removed
/// (<c>base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight</c>). An adapter not named "default" is
/// saved in a subfolder named after it, as PEFT does.
/// </summary>
public static partial class AdapterFiles
{
    /// <summary>The weights file PEFT's save_pretrained writes (<c>adapter_model.safetensors</c>).</summary>
    public const string WeightsFileName = "adapter_model.safetensors";
    /// <summary>The key prefix PEFT puts in front of module paths in saved weights (<c>base_model.model.</c>).</summary>
    public const string Prefix = "base_model.model.";
    /// <summary>PEFT's default adapter name, saved in the folder itself rather than a subfolder.</summary>
    public const string DefaultAdapter = "default";

    /// <summary>Where PEFT's save_pretrained puts an adapter: the folder itself for "default", else a subfolder.</summary>
    public static string FolderFor(string dir, string adapterName) =>
        adapterName == DefaultAdapter ? dir : Path.Combine(dir, adapterName);

    /// <summary>
    /// The weights file of an adapter folder. Only safetensors are read: a folder holding PyTorch's pickled
    /// <c>adapter_model.bin</c> instead is refused (unpickling can run arbitrary code), with a one-line error.
    /// </summary>
    public static string WeightsPath(string dir)
    {
        if (!Directory.Exists(dir)) throw new PeftSharpException($"{dir}: adapter folder not found");
        string weights = Path.Combine(dir, WeightsFileName);
        if (File.Exists(weights)) return weights;
        string pickle = Path.Combine(dir, "adapter_model.bin");
        if (File.Exists(pickle))
            throw new PeftSharpException($"{pickle}: PyTorch pickle files are not read (unpickling can run code); save the adapter as {WeightsFileName} (PEFT's default) or convert it");
        throw new PeftSharpException($"{dir}: no {WeightsFileName} (an adapter folder needs adapter_config.json and {WeightsFileName})");
    }

    /// <summary>
    /// Writes tensors (PEFT keys) and the config into an adapter folder as PEFT's save_pretrained does: the saved config is
    /// marked for inference, names the base model and has a task type; the in-memory config is left as it was.
    /// </summary>
    public static void WriteFolder(string folder, IEnumerable<KeyValuePair<string, Tensor>> tensors, PeftConfig config, string? baseModelNameOrPath)
    {
        Directory.CreateDirectory(folder);
        using (var scope = NewDisposeScope())
        {
            var cpu = tensors.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().cpu().contiguous())).ToList();
            SafetensorsWriter.Save(Path.Combine(folder, WeightsFileName), cpu, new Dictionary<string, string> { ["format"] = "pt" });
        }
        bool inference = config.InferenceMode;
        string? baseName = config.BaseModelNameOrPath;
        string? task = config.TaskType;
        config.InferenceMode = true;
        if (baseModelNameOrPath is not null) config.BaseModelNameOrPath = baseModelNameOrPath;
        config.TaskType ??= TaskTypes.CausalLm;
        try { config.Save(folder); }
        finally
        {
            config.InferenceMode = inference;
            config.BaseModelNameOrPath = baseName;
            config.TaskType = task;
        }
    }

    /// <summary>
    /// Reads every tensor of <paramref name="weights"/> into its place: <paramref name="normalize"/> maps a file key to
    /// the expected PEFT key (e.g. dropping an adapter name). Unknown keys, wrong shapes and missing tensors are one-line
    /// errors naming the file and the key.
    /// </summary>
    public static void ReadTensors(string weights, IReadOnlyDictionary<string, Tensor> expected, Func<string, string>? normalize = null)
    {
        using var file = SafetensorsFile.Open(weights);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, info) in file.Tensors)
        {
            string name = normalize?.Invoke(key) ?? key;
            if (!expected.TryGetValue(name, out var target))
                throw new PeftSharpException($"{weights}: tensor '{key}' has no place in this model (is the adapter for another base model or other target_modules?)");
            if (!info.Shape.SequenceEqual(target.shape))
                throw new PeftSharpException(
                    $"{weights}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}] but this model needs [{string.Join(", ", target.shape)}] (adapter made for another base model?)");
            using (no_grad()) file.ReadInto(key, target);
            seen.Add(name);
        }
        var missing = expected.Keys.Where(k => !seen.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (missing.Count > 0)
            throw new PeftSharpException($"{weights}: missing tensor '{missing[0]}'" + (missing.Count > 1 ? $" and {missing.Count - 1} more" : ""));
    }
}
