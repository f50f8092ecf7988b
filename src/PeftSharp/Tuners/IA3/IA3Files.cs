using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.IA3;

/// <summary>
/// PEFT's on-disk format for (IA)³: <c>adapter_config.json</c> with <c>peft_type: "IA3"</c>, and
/// <c>adapter_model.safetensors</c> with one vector per target, <c>base_model.model.&lt;path&gt;.ia3_l</c>, shaped [out, 1]
/// or, for feed-forward targets, [1, in] (a ParameterDict entry: no ".weight"; the adapter name removed). Files whose
/// keys still carry the adapter name (<c>….ia3_l.default</c>) are read too.
/// </summary>
public static class IA3Files
{
    /// <summary>PEFT's get_peft_model_state_dict for one (IA)³ adapter, by PEFT key.</summary>
    public static SortedDictionary<string, Tensor> StateDict(IA3Model ia3, string adapter = AdapterFiles.DefaultAdapter)
    {
        if (!ia3.Configs.ContainsKey(adapter)) throw new PeftSharpException($"no adapter named \"{adapter}\"");
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (path, layer) in ia3.Layers)
            if (layer.Contains(adapter)) result[$"{AdapterFiles.Prefix}{path}.ia3_l"] = layer.Vector(adapter);
        foreach (var m in ia3.ModulesToSaveByPath.Values)
            if (m.Adapters.Contains(adapter))
                foreach (var (name, value) in m.ValuesOf(adapter)) result[$"{AdapterFiles.Prefix}{m.Path}.{name}"] = value;
        return result;
    }

    /// <summary>Writes one adapter in PEFT's layout into <paramref name="dir"/> (a subfolder for a name other than "default").</summary>
    public static string Save(IA3Model ia3, string dir, string adapter = AdapterFiles.DefaultAdapter, string? baseModelNameOrPath = null)
    {
        if (!ia3.Configs.TryGetValue(adapter, out var config)) throw new PeftSharpException($"no adapter named \"{adapter}\"");
        string folder = AdapterFiles.FolderFor(dir, adapter);
        AdapterFiles.WriteFolder(folder, StateDict(ia3, adapter), config, baseModelNameOrPath);
        return folder;
    }

    /// <summary>Loads a PEFT (IA)³ folder onto a model as a new tuner model with one active adapter.</summary>
    public static IA3Model Load(Models.CausalLM model, string dir, string adapter = AdapterFiles.DefaultAdapter, bool trainable = false)
    {
        var ia3 = IA3Model.Attach(model);
        LoadAdapter(ia3, dir, adapter, trainable);
        ia3.SetAdapter(adapter);
        return ia3;
    }

    /// <summary>Loads another (IA)³ adapter into an existing model (PEFT's load_adapter); it is not made active.</summary>
    public static void LoadAdapter(IA3Model ia3, string dir, string adapter, bool trainable = false)
    {
        string weights = AdapterFiles.WeightsPath(dir);
        var config = IA3Config.Load(dir);
        ia3.AddAdapter(adapter, config, trainable: trainable);
        try
        {
            var expected = StateDict(ia3, adapter);
            var modulesToSave = ia3.ModulesToSaveByPath.Values.Where(m => m.Adapters.Contains(adapter)).ToList();
            // modules_to_save copies are not live parameters unless active: read them into temporaries, then write through.
            var staged = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            var targets = expected.ToDictionary(kv => kv.Key, kv =>
            {
                if (kv.Key.EndsWith(".ia3_l", StringComparison.Ordinal)) return kv.Value;
                var copy = empty_like(kv.Value);
                staged[kv.Key] = copy;
                return copy;
            }, StringComparer.Ordinal);
            string suffix = $".ia3_l.{adapter}";
            AdapterFiles.ReadTensors(weights, targets, key => key.EndsWith(suffix, StringComparison.Ordinal) ? key[..^(adapter.Length + 1)] : key);
            foreach (var (key, value) in staged)
            {
                var owner = modulesToSave.First(m => key.StartsWith($"{AdapterFiles.Prefix}{m.Path}.", StringComparison.Ordinal));
                owner.SetValue(adapter, key[($"{AdapterFiles.Prefix}{owner.Path}.").Length..], value);
                value.Dispose();
            }
        }
        catch
        {
            ia3.DeleteAdapter(adapter);
            throw;
        }
    }
}
