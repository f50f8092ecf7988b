using PeftSharp.Models;
using PeftSharp.Tensors;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Peft;

// LoRA's adapter files: PEFT keys ↔ LoRA parameter names, state dict, save and load (kept beside LoRA).
public static partial class AdapterFiles
{
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
        string weights = WeightsPath(dir); // safetensors only: a pickled adapter_model.bin is refused
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
