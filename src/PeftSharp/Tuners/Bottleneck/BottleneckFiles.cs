using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// LLM-Adapters' on-disk format for BOTTLENECK adapters: <c>adapter_config.json</c> (<see cref="BottleneckConfig"/>)
/// and the weights under the PEFT prefix <c>base_model.model.</c> with the fork's names, e.g.
/// <c>base_model.model.model.layers.0.mlp.down_proj.adapter_down.weight</c>. The fork writes <c>adapter_model.bin</c>
/// (a pickle); PeftSharp reads and writes <c>adapter_model.safetensors</c> only, with the same keys.
/// </summary>
public static class BottleneckFiles
{
    /// <summary>The safetensors weights file of a bottleneck adapter folder.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";
    /// <summary>The pickled weights file (<c>adapter_model.bin</c>) the fork writes.</summary>
    public const string PickleFileName = "adapter_model.bin";

    /// <summary>The tensors the fork's get_peft_model_state_dict returns, by key.</summary>
    public static SortedDictionary<string, Tensor> StateDict(BottleneckModel model)
    {
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, p) in model.TrainableParameters()) result[AdapterFiles.Prefix + name] = p;
        return result;
    }

    /// <summary>Writes the adapter folder (config and weights, each replaced atomically).</summary>
    public static void Save(BottleneckModel model, string dir, string? baseModelNameOrPath = null)
    {
        if (File.Exists(dir)) throw new PeftSharpException($"{dir}: is a file, expected a folder for the adapter");
        Directory.CreateDirectory(dir);
        using (var scope = NewDisposeScope())
        {
            var cpu = StateDict(model).Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().cpu().contiguous()));
            SafetensorsWriter.Save(Path.Combine(dir, WeightsFileName), cpu, new Dictionary<string, string> { ["format"] = "pt" });
        }
        var config = model.Config ?? throw new PeftSharpException("no bottleneck adapter to save");
        bool inference = config.InferenceMode;
        string? baseName = config.BaseModelNameOrPath;
        config.InferenceMode = true;
        if (baseModelNameOrPath is not null) config.BaseModelNameOrPath = baseModelNameOrPath;
        config.TaskType ??= TaskTypes.CausalLm;
        try { config.Save(dir); }
        finally
        {
            config.InferenceMode = inference;
            config.BaseModelNameOrPath = baseName ?? config.BaseModelNameOrPath;
        }
    }

    /// <summary>Loads an LLM-Adapters BOTTLENECK folder onto <paramref name="model"/>; the adapter is active.</summary>
    public static BottleneckModel Load(CausalLM model, string dir, bool trainable = false, string name = AdapterFiles.DefaultAdapter)
    {
        var bottleneck = BottleneckModel.Attach(model);
        LoadAdapter(bottleneck, dir, name, trainable);
        bottleneck.SetActive(true);
        return bottleneck;
    }

    /// <summary>Loads an LLM-Adapters BOTTLENECK folder into <paramref name="bottleneck"/> (not made active).</summary>
    public static void LoadAdapter(BottleneckModel bottleneck, string dir, string name, bool trainable = false)
    {
        if (!Directory.Exists(dir)) throw new PeftSharpException($"{dir}: adapter folder not found");
        var config = BottleneckConfig.Load(dir);
        string weights = RequireSafetensors(dir, WeightsFileName, PickleFileName);
        bottleneck.AddAdapter(name, config, trainable: trainable);
        try { ReadWeights(weights, StateDict(bottleneck)); }
        catch
        {
            bottleneck.Unload();
            throw;
        }
    }

    /// <summary>The safetensors weights file of a folder, or a one-line error (a pickle is refused, never unpickled).</summary>
    internal static string RequireSafetensors(string dir, string safeName, string pickleName)
    {
        string weights = Path.Combine(dir, safeName);
        if (File.Exists(weights)) return weights;
        if (File.Exists(Path.Combine(dir, pickleName)))
            throw new PeftSharpException($"{Path.Combine(dir, pickleName)}: a pickle file, which PeftSharp never loads; convert it to {safeName} (safetensors) first");
        throw new PeftSharpException($"{dir}: no {safeName} (the adapter's weights)");
    }

    /// <summary>Copies every tensor of <paramref name="path"/> into its slot; unknown, misshapen or missing tensors are one-line errors.</summary>
    internal static void ReadWeights(string path, IReadOnlyDictionary<string, Tensor> slots, Func<string, string?>? keyMap = null)
    {
        using var file = SafetensorsFile.Open(path);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, info) in file.Tensors)
        {
            string? slotKey = keyMap is null ? key : keyMap(key);
            if (slotKey is null || !slots.TryGetValue(slotKey, out var target))
                throw new PeftSharpException($"{path}: tensor '{key}' has no place in this model (an adapter for another base model or configuration?)");
            if (!info.Shape.SequenceEqual(target.shape))
                throw new PeftSharpException(
                    $"{path}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}] but this model needs [{string.Join(", ", target.shape)}]");
            using (no_grad()) file.ReadInto(key, target);
            seen.Add(slotKey);
        }
        var missing = slots.Keys.Where(k => !seen.Contains(k)).ToList();
        if (missing.Count > 0)
            throw new PeftSharpException($"{path}: missing tensor '{missing[0]}'" + (missing.Count > 1 ? $" and {missing.Count - 1} more" : ""));
    }
}
