using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// An AdapterFusion folder. What AdapterHub's <c>save_adapter_fusion(dir, "a,b", use_safetensors=True)</c> writes:
/// <c>adapter_fusion_config.json</c> = <c>{"adapter_names": [...], "config": {fusion fields}, "hidden_size",
/// "model_class", "model_name", "model_type", "name": "a,b", "version"}</c> and <c>model_adapter_fusion.safetensors</c>
/// with the fusion layers' state-dict entries (<c>transformer.h.0.output_adapters.adapter_fusion_layer.a,b.query.weight</c>).
/// PeftSharp also writes each fused adapter into a subfolder named after it (AdapterHub's <c>save_adapter</c> layout),
/// so the folder is complete: in Python, <c>load_adapter</c> each subfolder, then <c>load_adapter_fusion</c> the folder.
/// Reading takes fused adapters from those subfolders, or, for a folder AdapterHub wrote alone, from adapters already
/// loaded under the same names.
/// </summary>
public static class AdapterFusionFiles
{
    /// <summary>AdapterHub's fusion config file name.</summary>
    public const string ConfigFileName = "adapter_fusion_config.json";
    /// <summary>AdapterHub's fusion weights file name with safetensors.</summary>
    public const string WeightsFileName = "model_adapter_fusion.safetensors";
    /// <summary>AdapterHub's fusion weights file name with torch's pickle format (refused).</summary>
    public const string PickleFileName = "pytorch_model_adapter_fusion.bin";

    /// <summary>True when the folder holds adapter_fusion_config.json.</summary>
    public static bool IsFusionFolder(string dir) => File.Exists(Path.Combine(dir, ConfigFileName));

    /// <summary>The adapter_fusion_config.json text AdapterHub writes (json.dump with indent=2, sort_keys=True).</summary>
    public static string ConfigJson(AdapterFusionModel model, string name, string? modelName)
    {
        var (config, adapters) = model.Fusions[name];
        var root = new JsonObject
        {
            ["adapter_names"] = new JsonArray([.. adapters.Select(a => (JsonNode?)JsonValue.Create(a))]),
            ["config"] = config.ToJson(),
            ["hidden_size"] = model.Model.Config.Hidden,
            ["model_class"] = model.Model is Gpt2LMHeadModel ? "GPT2LMHeadModel" : "LlamaForCausalLM",
            ["model_name"] = modelName,
            ["model_type"] = model.Model.Config.ModelType,
            ["name"] = string.Join(",", adapters),
            ["version"] = AdapterHubFiles.MatchedVersion,
        };
        return PythonJson.Dumps(root);
    }

    /// <summary>Writes the fusion folder: config, fusion weights and one subfolder per fused adapter, each file replaced atomically.</summary>
    public static void Save(AdapterFusionModel model, string dir, string name, string? modelName = null)
    {
        if (!model.Fusions.TryGetValue(name, out var fusion)) throw new PeftSharpException($"no fusion named \"{name}\"");
        if (File.Exists(dir)) throw new PeftSharpException($"{dir}: is a file, expected a folder for the fusion");
        Directory.CreateDirectory(dir);
        foreach (var adapter in fusion.Adapters) AdapterHubFiles.Save(model.Hub, Path.Combine(dir, adapter), adapter, modelName);
        using (var scope = NewDisposeScope())
        {
            var cpu = model.ParametersOf(name).OrderBy(p => p.Name, StringComparer.Ordinal)
                .Select(p => new KeyValuePair<string, Tensor>(p.Name, p.Param.detach().cpu().contiguous()));
            SafetensorsWriter.Save(Path.Combine(dir, WeightsFileName), cpu);
        }
        byte[] json = Encoding.UTF8.GetBytes(ConfigJson(model, name, modelName));
        AtomicFile.Write(Path.Combine(dir, ConfigFileName), s => s.Write(json));
    }

    /// <summary>Reads adapter_fusion_config.json: the fused adapters' names and the fusion config.</summary>
    public static (IReadOnlyList<string> Adapters, AdapterFusionConfig Config) ReadConfig(string dir, CausalLM? model = null)
    {
        string path = Path.Combine(dir, ConfigFileName);
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: file not found (expected an AdapterFusion folder)");
        var root = IO.JsonErrors.ReadObjectFile(path);
        if (root["config"] is not JsonObject config) throw new PeftSharpException($"{path}: field 'config' must be an object holding the fusion's fields");
        List<string> names;
        if (root["adapter_names"] is JsonArray list)
            names = list.Select(n => n is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>()
                : throw new PeftSharpException($"{path}: field 'adapter_names' must be a list of adapter names (strings)")).ToList();
        else if (root["name"] is JsonValue nv && nv.GetValueKind() == JsonValueKind.String)
            names = [.. nv.GetValue<string>().Split(',')]; // older files: the fusion name is the adapter names joined by ','
        else throw new PeftSharpException($"{path}: field 'adapter_names' is missing (expected the fused adapters' names)");
        if (names.Count == 0 || names.Any(n => n.Length == 0 || n.Contains('.') || n.Contains(',')))
            throw new PeftSharpException($"{path}: field 'adapter_names' must list at least one adapter name without '.' or ','");
        if (model is not null && root["hidden_size"] is JsonValue hs && hs.GetValueKind() == JsonValueKind.Number && hs.GetValue<JsonElement>().GetInt32() != model.Config.Hidden)
            throw new PeftSharpException($"{path}: field 'hidden_size' is {hs.ToJsonString()} but the base model's is {model.Config.Hidden}");
        return (names, AdapterFusionConfig.FromJson(config, path));
    }

    /// <summary>Loads a fusion folder into <paramref name="model"/> as <paramref name="name"/> (not made active).</summary>
    public static void Load(AdapterFusionModel model, string dir, string name, bool trainable = false)
    {
        if (!Directory.Exists(dir)) throw new PeftSharpException($"{dir}: fusion folder not found");
        var (adapters, config) = ReadConfig(dir, model.Model);
        string weights = BottleneckFiles.RequireSafetensors(dir, WeightsFileName, PickleFileName);
        var owned = new List<string>();
        try
        {
            foreach (var adapter in adapters)
            {
                string sub = Path.Combine(dir, adapter);
                if (Directory.Exists(sub))
                {
                    if (model.Hub.Configs.ContainsKey(adapter))
                        throw new PeftSharpException($"{sub}: an adapter named \"{adapter}\" is already loaded");
                    owned.Add(AdapterHubFiles.LoadAdapter(model.Hub, sub, adapter, trainable: false));
                }
                else if (!model.Hub.Configs.ContainsKey(adapter))
                    throw new PeftSharpException($"{dir}: fused adapter \"{adapter}\" not found (expected the subfolder {sub}, or an adapter of that name loaded first)");
            }
            model.AddLoadedFusion(name, config, adapters, owned, trainable);
        }
        catch
        {
            foreach (var a in owned) model.Hub.DeleteAdapter(a);
            throw;
        }
        try
        {
            var slots = model.ParametersOf(name).ToDictionary(p => p.Name, p => (Tensor)p.Param, StringComparer.Ordinal);
            string basePrefix = model.Model.Config.IsGpt2 ? "transformer." : "model.";
            AdapterFiles.ReadTensors(weights, slots, key => key.StartsWith(basePrefix, StringComparison.Ordinal) ? key : basePrefix + key);
        }
        catch
        {
            model.DeleteFusion(name);
            throw;
        }
    }
}
