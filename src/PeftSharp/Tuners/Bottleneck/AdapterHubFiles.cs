using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// AdapterHub's saved-adapter folder (<c>model.save_adapter(dir, name, use_safetensors=True)</c>):
/// <c>adapter_config.json</c> = <c>{"config": {BnConfig fields}, "hidden_size", "model_class", "model_name",
/// "model_type", "name", "version"}</c> and <c>adapter.safetensors</c> holding the model's state-dict entries of that
/// adapter, e.g. <c>transformer.h.0.output_adapters.adapters.{name}.adapter_down.0.weight</c> (GPT-2) or
/// <c>model.layers.0.attention_adapters.adapters.{name}.adapter_up.bias</c> (Llama). Keys without the base-model prefix
/// (<c>h.0....</c>, <c>layers.0....</c>, saved from a bare base model) are read too. <c>pytorch_adapter.bin</c> is a
/// pickle and is refused.
/// </summary>
public static class AdapterHubFiles
{
    /// <summary>The config file of an AdapterHub adapter folder.</summary>
    public const string ConfigFileName = "adapter_config.json";
    /// <summary>The safetensors weights file of an AdapterHub adapter folder.</summary>
    public const string WeightsFileName = "adapter.safetensors";
    /// <summary>The pickled weights file (<c>pytorch_adapter.bin</c>) older AdapterHub folders have.</summary>
    public const string PickleFileName = "pytorch_adapter.bin";
    /// <summary>The <c>adapters</c> library version whose format is matched (written as <c>"version": "adapters.1.2.0"</c>).</summary>
    public const string MatchedVersion = "adapters.1.2.0";

    /// <summary>True when the folder's adapter_config.json is AdapterHub's (a <c>"config"</c> object and no <c>peft_type</c>).</summary>
    public static bool IsAdapterHubFolder(string dir)
    {
        string path = Path.Combine(dir, ConfigFileName);
        if (!File.Exists(path)) return false;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            var root = doc.RootElement;
            return root.ValueKind == JsonValueKind.Object && !root.TryGetProperty("peft_type", out _)
                && root.TryGetProperty("config", out var c) && c.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException) { return false; }
    }

    /// <summary>The adapter_config.json text AdapterHub writes (json.dump with indent=2, sort_keys=True).</summary>
    public static string ConfigJson(AdapterHubModel hub, string name, string? modelName)
    {
        var model = hub.Model;
        var root = new JsonObject
        {
            ["config"] = hub.Configs[name].Fields.DeepClone(),
            ["hidden_size"] = model.Config.Hidden,
            ["model_class"] = model is Gpt2LMHeadModel ? "GPT2LMHeadModel" : "LlamaForCausalLM",
            ["model_name"] = modelName,
            ["model_type"] = model.Config.ModelType,
            ["name"] = name,
            ["version"] = MatchedVersion,
        };
        return PythonJson.Dumps(root);
    }

    /// <summary>The tensors AdapterHub saves for one adapter, by key (the LayerNorm before the bottleneck appears twice, as
    /// <c>adapter_down.0</c> and <c>adapter_norm_before</c>, as in a torch state dict).</summary>
    public static SortedDictionary<string, Tensor> StateDict(AdapterHubModel hub, string name)
    {
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (key, p) in hub.ParametersOf(name))
        {
            result[key] = p;
            if (hub.Configs[name].LnBefore && key.Contains(".adapter_down.0.", StringComparison.Ordinal))
                result[key.Replace(".adapter_down.0.", ".adapter_norm_before.", StringComparison.Ordinal)] = p;
        }
        return result;
    }

    /// <summary>Writes one adapter's folder: adapter_config.json and adapter.safetensors, each replaced atomically.</summary>
    public static void Save(AdapterHubModel hub, string dir, string name, string? modelName = null)
    {
        if (!hub.Configs.ContainsKey(name)) throw new PeftSharpException($"no adapter named \"{name}\"");
        if (File.Exists(dir)) throw new PeftSharpException($"{dir}: is a file, expected a folder for the adapter");
        Directory.CreateDirectory(dir);
        using (var scope = NewDisposeScope())
        {
            var cpu = StateDict(hub, name).Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().cpu().contiguous()));
            SafetensorsWriter.Save(Path.Combine(dir, WeightsFileName), cpu);
        }
        byte[] json = Encoding.ASCII.GetBytes(ConfigJson(hub, name, modelName));
        AtomicFile.Write(Path.Combine(dir, ConfigFileName), s => s.Write(json));
    }

    /// <summary>Reads the folder's adapter_config.json: the adapter's name and its bottleneck config.</summary>
    public static (string Name, AdapterHubConfig Config) ReadConfig(string dir, CausalLM? model = null)
    {
        string path = Path.Combine(dir, ConfigFileName);
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: file not found (expected an AdapterHub adapter folder)");
        var root = IO.JsonErrors.ReadObjectFile(path);
        if (root["config"] is not JsonObject config)
            throw new PeftSharpException($"{path}: field 'config' must be an object holding the adapter's BnConfig fields");
        if (root["name"] is not JsonValue nameNode || nameNode.GetValueKind() != JsonValueKind.String)
            throw new PeftSharpException($"{path}: field 'name' must be the adapter's name (a string)");
        string name = nameNode.GetValue<string>();
        if (name.Length == 0 || name.Contains('.')) throw new PeftSharpException($"{path}: field 'name' is \"{name}\"; expected a non-empty name without '.'");
        if (model is not null)
        {
            if (root["model_type"] is JsonValue mt && mt.GetValueKind() == JsonValueKind.String && mt.GetValue<string>() != model.Config.ModelType)
                throw new PeftSharpException($"{path}: field 'model_type' is \"{mt.GetValue<string>()}\" but the base model is \"{model.Config.ModelType}\"");
            if (root["hidden_size"] is JsonValue hs && hs.GetValueKind() == JsonValueKind.Number && hs.GetValue<JsonElement>().GetInt32() != model.Config.Hidden)
                throw new PeftSharpException($"{path}: field 'hidden_size' is {hs.ToJsonString()} but the base model's is {model.Config.Hidden}");
        }
        return (name, AdapterHubConfig.FromJson(config, path));
    }

    /// <summary>Loads an AdapterHub folder onto <paramref name="model"/> and makes it the active adapter.</summary>
    public static AdapterHubModel Load(CausalLM model, string dir, string? loadAs = null, bool trainable = false)
    {
        var hub = AdapterHubModel.For(model);
        string name = LoadAdapter(hub, dir, loadAs, trainable);
        hub.SetActive(name, trainable);
        return hub;
    }

    /// <summary>Loads an AdapterHub folder into <paramref name="hub"/> under <paramref name="loadAs"/> (default: its saved name); not made active.</summary>
    public static string LoadAdapter(AdapterHubModel hub, string dir, string? loadAs = null, bool trainable = false)
    {
        var model = hub.Model;
        if (!Directory.Exists(dir)) throw new PeftSharpException($"{dir}: adapter folder not found");
        var (savedName, config) = ReadConfig(dir, model);
        string weights = BottleneckFiles.RequireSafetensors(dir, WeightsFileName, PickleFileName);
        string name = loadAs ?? savedName;
        hub.AddAdapter(name, config, trainable: trainable);
        var slots = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (key, p) in hub.ParametersOf(name)) slots[key] = p;
        string basePrefix = model.Config.IsGpt2 ? "transformer." : "model.";
        string Map(string key)
        {
            string k = key.StartsWith(basePrefix, StringComparison.Ordinal) ? key : basePrefix + key;
            k = k.Replace($".adapters.{savedName}.", $".adapters.{name}.", StringComparison.Ordinal);
            return k.Replace(".adapter_norm_before.", ".adapter_down.0.", StringComparison.Ordinal);
        }
        try { ReadAliased(weights, slots, Map); }
        catch
        {
            hub.DeleteAdapter(name);
            throw;
        }
        return name;
    }

    // Like BottleneckFiles.ReadWeights, but two file keys may fill one slot (adapter_norm_before and adapter_down.0).
    static void ReadAliased(string path, IReadOnlyDictionary<string, Tensor> slots, Func<string, string> map)
    {
        using var file = SafetensorsFile.Open(path);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, info) in file.Tensors)
        {
            string slotKey = map(key);
            if (!slots.TryGetValue(slotKey, out var target))
                throw new PeftSharpException($"{path}: tensor '{key}' has no place in this model (an adapter for another base model or configuration?)");
            if (!info.Shape.SequenceEqual(target.shape))
                throw new PeftSharpException($"{path}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}] but this model needs [{string.Join(", ", target.shape)}]");
            using (no_grad()) file.ReadInto(key, target);
            seen.Add(slotKey);
        }
        var missing = slots.Keys.Where(k => !seen.Contains(k)).ToList();
        if (missing.Count > 0)
            throw new PeftSharpException($"{path}: missing tensor '{missing[0]}'" + (missing.Count > 1 ? $" and {missing.Count - 1} more" : ""));
    }
}
