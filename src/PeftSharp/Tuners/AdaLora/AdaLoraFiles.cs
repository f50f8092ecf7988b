using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>
/// PEFT's on-disk format for AdaLoRA: <c>adapter_config.json</c> with <c>peft_type: "ADALORA"</c> and the final
/// <c>rank_pattern</c> (module path + ".lora_E" → one kept flag per initial triplet), and
/// <c>adapter_model.safetensors</c> with <c>base_model.model.&lt;path&gt;.lora_A</c> [k, in], <c>.lora_B</c> [out, k] and
/// <c>.lora_E</c> [k, 1] (ParameterDict entries, so no ".weight"; adapter name removed), where k counts the kept
/// triplets: pruned ones are not written. <c>ranknum</c> is not saved (it is init_r, restored from the config).
/// </summary>
public static class AdaLoraFiles
{
    static readonly string[] Factors = ["lora_A", "lora_B", "lora_E"];

    /// <summary>PEFT's get_peft_model_state_dict for one AdaLoRA adapter: pruned triplets dropped (resize_state_dict_by_rank_pattern).</summary>
    public static SortedDictionary<string, Tensor> StateDict(AdaLoraModel ada, string adapter = AdapterFiles.DefaultAdapter)
    {
        if (!ada.Configs.TryGetValue(adapter, out var config)) throw new PeftSharpException($"no adapter named \"{adapter}\"");
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (path, layer) in ada.Layers)
        {
            if (!layer.Contains(adapter)) continue;
            Tensor a = layer.A(adapter), b = layer.B(adapter), e = layer.E(adapter);
            if (config.RankPattern is { } pattern && AdaLoraModel.PatternFor(pattern, path, adapter) is { } keep)
            {
                int kept = keep.Count(k => k);
                if (kept != a.shape[0])
                {
                    if (keep.Count != a.shape[0])
                        throw new PeftSharpException($"rank_pattern has {keep.Count} flags for {path}, whose factors have rank {a.shape[0]}");
                    var rows = tensor(Enumerable.Range(0, keep.Count).Where(i => keep[i]).Select(i => (long)i).ToArray(), device: a.device);
                    (a, b, e) = (a.index_select(0, rows), b.index_select(1, rows), e.index_select(0, rows));
                }
            }
            string prefix = $"{AdapterFiles.Prefix}{path}.";
            result[prefix + "lora_A"] = a;
            result[prefix + "lora_B"] = b;
            result[prefix + "lora_E"] = e;
        }
        return result;
    }

    /// <summary>
    /// Writes one adapter in PEFT's layout into <paramref name="dir"/> (a subfolder for a non-default name). The saved
    /// config is marked for inference, names the base model, and has rank_pattern keys without the adapter name.
    /// </summary>
    public static string Save(AdaLoraModel ada, string dir, string adapter = AdapterFiles.DefaultAdapter, string? baseModelNameOrPath = null)
    {
        if (!ada.Configs.TryGetValue(adapter, out var config)) throw new PeftSharpException($"no adapter named \"{adapter}\"");
        string folder = AdapterFiles.FolderFor(dir, adapter);
        Directory.CreateDirectory(folder);
        using (var scope = NewDisposeScope())
        {
            var tensors = StateDict(ada, adapter).Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().cpu().contiguous())).ToList();
            SafetensorsWriter.Save(Path.Combine(folder, AdapterFiles.WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        }
        var pattern = config.RankPattern;
        bool inference = config.InferenceMode;
        string? baseName = config.BaseModelNameOrPath;
        if (pattern is not null)
        {
            string suffix = $".lora_E.{adapter}";
            var stripped = new OrderedDictionary<string, IReadOnlyList<bool>>(StringComparer.Ordinal);
            foreach (var (k, v) in pattern) stripped[k.EndsWith(suffix, StringComparison.Ordinal) ? k[..^(adapter.Length + 1)] : k] = v;
            config.RankPattern = stripped;
        }
        config.InferenceMode = true;
        if (baseModelNameOrPath is not null) config.BaseModelNameOrPath = baseModelNameOrPath;
        config.TaskType ??= TaskTypes.CausalLm;
        try { config.Save(folder); }
        finally
        {
            config.InferenceMode = inference;
            config.BaseModelNameOrPath = baseName ?? config.BaseModelNameOrPath;
            config.RankPattern = pattern;
        }
        return folder;
    }

    /// <summary>Loads a PEFT AdaLoRA adapter folder onto a model, shrinking layers to the saved rank_pattern.</summary>
    public static AdaLoraModel Load(CausalLM model, string dir, string adapter = AdapterFiles.DefaultAdapter, bool trainable = false) =>
        LoadInto(null, model, dir, adapter, trainable);

    /// <summary>Loads another AdaLoRA adapter into an existing model (PEFT's load_adapter); it is not made active.</summary>
    public static void LoadAdapter(AdaLoraModel ada, string dir, string adapter, bool trainable = false) =>
        LoadInto(ada, ada.Model, dir, adapter, trainable);

    static AdaLoraModel LoadInto(AdaLoraModel? ada, CausalLM model, string dir, string adapter, bool trainable)
    {
        if (!Directory.Exists(dir)) throw new PeftSharpException($"{dir}: adapter folder not found");
        var config = AdaLoraConfig.Load(dir);
        string weights = AdapterFiles.WeightsPath(dir); // safetensors only: a pickled adapter_model.bin is refused
        if (ada is null) ada = AdaLoraModel.Create(model, config, adapter, trainable: trainable);
        else ada.AddAdapter(adapter, config, trainable: trainable);
        ada.ResizeByRankPattern(adapter);
        using var file = SafetensorsFile.Open(weights);
        var expected = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (path, layer) in ada.Layers)
        {
            if (!layer.Contains(adapter)) continue;
            expected[$"{AdapterFiles.Prefix}{path}.lora_A"] = layer.A(adapter);
            expected[$"{AdapterFiles.Prefix}{path}.lora_B"] = layer.B(adapter);
            expected[$"{AdapterFiles.Prefix}{path}.lora_E"] = layer.E(adapter);
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, info) in file.Tensors)
        {
            // Keys may carry the adapter name (older PEFT, other tools): <path>.lora_X.<adapter>.
            string normalized = Factors.Select(f => $".{f}.{adapter}").FirstOrDefault(s => key.EndsWith(s, StringComparison.Ordinal)) is string s
                ? key[..^(adapter.Length + 1)] : key;
            if (!expected.TryGetValue(normalized, out var target))
                throw new PeftSharpException($"{weights}: tensor '{key}' has no place in this model (is the adapter for another base model or other target_modules?)");
            if (!info.Shape.SequenceEqual(target.shape))
                throw new PeftSharpException(
                    $"{weights}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}] but this model needs [{string.Join(", ", target.shape)}] (adapter made for another base model, or rank_pattern does not match?)");
            using (no_grad()) file.ReadInto(key, target);
            seen.Add(normalized);
        }
        var missing = expected.Keys.Where(k => !seen.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (missing.Count > 0)
            throw new PeftSharpException($"{weights}: missing tensor '{missing[0]}'" + (missing.Count > 1 ? $" and {missing.Count - 1} more" : ""));
        return ada;
    }
}
