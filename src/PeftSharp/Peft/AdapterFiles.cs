using PeftSharp.Models;
using PeftSharp.Tensors;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Peft;

/// <summary>
/// Hugging Face PEFT's on-disk adapter format: <c>adapter_config.json</c> plus <c>adapter_model.safetensors</c>
/// whose keys are the model's parameter names under <c>base_model.model.</c> with the adapter name removed
/// (<c>base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight</c>). An adapter not named "default" is
/// saved in a subfolder named after it, as PEFT does.
/// </summary>
public static class AdapterFiles
{
    public const string WeightsFileName = "adapter_model.safetensors";
    public const string Prefix = "base_model.model.";
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

    /// <summary>Our parameter name → PEFT key (adapter name stripped; DoRA's magnitude without ".weight").</summary>
    public static string ToPeftKey(string name, string adapter)
    {
        string magnitude = $".lora_magnitude_vector.{adapter}.weight";
        if (name.EndsWith(magnitude, StringComparison.Ordinal)) return Prefix + name[..^magnitude.Length] + ".lora_magnitude_vector";
        if (name.EndsWith("." + adapter, StringComparison.Ordinal)) return Prefix + name[..^(adapter.Length + 1)];
        return Prefix + name.Replace($".{adapter}.", ".", StringComparison.Ordinal);
    }

    /// <summary>PEFT key → our parameter name for the given adapter.</summary>
    public static string FromPeftKey(string key, string adapter, string file)
    {
        if (!key.StartsWith(Prefix, StringComparison.Ordinal))
            throw new PeftSharpException($"{file}: tensor '{key}' does not start with '{Prefix}' (not a PEFT adapter key)");
        string name = key[Prefix.Length..];
        if (name.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal)) return $"{name}.{adapter}.weight";
        if (name.EndsWith(".lora_embedding_A", StringComparison.Ordinal) || name.EndsWith(".lora_embedding_B", StringComparison.Ordinal))
            return $"{name}.{adapter}";
        foreach (var part in new[] { ".lora_A.", ".lora_B." })
            if (name.Contains(part, StringComparison.Ordinal)) return name.Replace(part, $"{part}{adapter}.", StringComparison.Ordinal);
        return name;
    }

    /// <summary>The tensors PEFT's get_peft_model_state_dict returns for one adapter, by PEFT key.</summary>
    public static SortedDictionary<string, Tensor> StateDict(LoraModel lora, string adapter)
    {
        var config = lora.Configs[adapter];
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, param, owner) in lora.AdapterParameters())
            if (owner == adapter) result[ToPeftKey(name, adapter)] = param;
        if (config.Bias is "all" or "lora_only")
        {
            var loraPaths = lora.LinearLayers.Where(l => l.Value.Adapters.ContainsKey(adapter)).Select(l => l.Key + ".bias").ToHashSet();
            foreach (var (name, p) in lora.Root.named_parameters())
                if (name.EndsWith(".bias") && !name.Contains(".lora_") && (config.Bias == "all" || loraPaths.Contains(name)))
                    result[Prefix + name] = p;
        }
        foreach (var m in lora.ModulesToSaveByPath.Values)
            if (m.Adapters.Contains(adapter))
                foreach (var (name, value) in m.ValuesOf(adapter)) result[$"{Prefix}{m.Path}.{name}"] = value;
        return result;
    }

    /// <summary>
    /// Writes one adapter in PEFT's layout into <paramref name="dir"/> (or its subfolder for a non-default name).
    /// Files are written to temporary names and renamed into place, so an existing adapter is never half-overwritten.
    /// </summary>
    public static string Save(LoraModel lora, string dir, string adapter = DefaultAdapter, string? baseModelNameOrPath = null)
    {
        if (!lora.Configs.TryGetValue(adapter, out var config)) throw new PeftSharpException($"no adapter named \"{adapter}\"");
        string folder = FolderFor(dir, adapter);
        Directory.CreateDirectory(folder);
        var tensors = StateDict(lora, adapter);
        using (var scope = NewDisposeScope())
        {
            var cpu = tensors.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().cpu().contiguous()));
            SafetensorsWriter.Save(Path.Combine(folder, WeightsFileName), cpu, new Dictionary<string, string> { ["format"] = "pt" });
        }
        // As save_pretrained: the saved config is marked for inference and names the base model.
        bool inference = config.InferenceMode;
        string? baseName = config.BaseModelNameOrPath;
        config.InferenceMode = true;
        if (baseModelNameOrPath is not null) config.BaseModelNameOrPath = baseModelNameOrPath;
        config.TaskType ??= "CAUSAL_LM";
        try { config.Save(folder); }
        finally
        {
            config.InferenceMode = inference;
            config.BaseModelNameOrPath = baseName ?? config.BaseModelNameOrPath;
        }
        return folder;
    }

    /// <summary>Loads a PEFT LoRA adapter folder onto a model (creating the LoRA wrapper when needed).</summary>
    public static LoraModel Load(CausalLM model, string dir, string adapter = DefaultAdapter, bool trainable = false) =>
        LoadInto(null, model, dir, adapter, trainable);

    /// <summary>Loads another adapter into an existing LoRA model (PEFT's load_adapter); it is not made active.</summary>
    public static void LoadAdapter(LoraModel lora, string dir, string adapter, bool trainable = false) =>
        LoadInto(lora, lora.Model, dir, adapter, trainable);

    static LoraModel LoadInto(LoraModel? lora, CausalLM model, string dir, string adapter, bool trainable)
    {
        if (!Directory.Exists(dir)) throw new PeftSharpException($"{dir}: adapter folder not found");
        var config = LoraConfig.Load(dir);
        string weights = Path.Combine(dir, WeightsFileName);
        if (!File.Exists(weights))
            throw new PeftSharpException($"{dir}: no {WeightsFileName} (an adapter folder needs adapter_config.json and {WeightsFileName})");
        // The saved factors replace whatever the initialiser makes; never run initialisers that rewrite the base (PiSSA, OLoRA).
        var saved = config.InitLoraWeights;
        config.InitLoraWeights = InitLoraWeights.True;
        if (lora is null) lora = LoraModel.Create(model, config, adapter);
        else lora.AddAdapter(adapter, config, trainable: trainable);
        config.InitLoraWeights = saved;
        lora.SetTrainable(adapter, trainable);
        using var file = SafetensorsFile.Open(weights);
        var expected = StateDict(lora, adapter);
        var byName = new Dictionary<string, (string Key, Tensor Target)>(StringComparer.Ordinal);
        foreach (var (key, target) in expected) byName[key] = (key, target);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, info) in file.Tensors)
        {
            // Normalise through our names so files with or without the adapter name in keys both load.
            string peftKey = ToPeftKey(FromPeftKey(key, adapter, weights), adapter);
            if (!byName.TryGetValue(peftKey, out var slot))
                throw new PeftSharpException($"{weights}: tensor '{key}' has no place in this model (is the adapter for another base model or other target_modules?)");
            if (!info.Shape.SequenceEqual(slot.Target.shape))
                throw new PeftSharpException(
                    $"{weights}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}] but this model needs [{string.Join(", ", slot.Target.shape)}] (adapter made for another base model?)");
            ReadInto(lora, file, key, slot.Key, slot.Target, adapter);
            seen.Add(peftKey);
        }
        var missing = expected.Keys.Where(k => !seen.Contains(k)).ToList();
        if (missing.Count > 0)
            throw new PeftSharpException($"{weights}: missing tensor '{missing[0]}'" + (missing.Count > 1 ? $" and {missing.Count - 1} more" : ""));
        return lora;
    }

    static void ReadInto(LoraModel lora, SafetensorsFile file, string fileKey, string peftKey, Tensor target, string adapter)
    {
        // modules_to_save copies are not live parameters unless active: write through their owner.
        foreach (var m in lora.ModulesToSaveByPath.Values)
        {
            string prefix = $"{Prefix}{m.Path}.";
            if (m.Adapters.Contains(adapter) && peftKey.StartsWith(prefix, StringComparison.Ordinal) && !peftKey.Contains(".lora_"))
            {
                using var value = file.Read(fileKey);
                m.SetValue(adapter, peftKey[prefix.Length..], value);
                return;
            }
        }
        using var _ = no_grad();
        file.ReadInto(fileKey, target);
    }
}
