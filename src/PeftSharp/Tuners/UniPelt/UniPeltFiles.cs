using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.UniPelt;

/// <summary>
/// UniPELT's folder (a PeftSharp format, docs/unipelt.md): <c>adapter_config.json</c> (<see cref="UniPeltConfig"/>,
/// <c>peft_type: "UNIPELT"</c>) and <c>adapter_model.safetensors</c> whose keys are the model's parameter names under
/// PEFT's <c>base_model.model.</c> with the adapter name removed, e.g.
/// <c>base_model.model.transformer.h.0.attn.c_attn.unipelt_lora_A.weight</c>,
/// <c>base_model.model.transformer.h.0.unipelt_prefix_gate.weight</c> and <c>base_model.model.unipelt_prefix.weight</c>.
/// </summary>
public static class UniPeltFiles
{
    /// <summary>The saved key of a model parameter name (adapter name removed from the prefix table's name).</summary>
    public static string KeyOf(string parameterName, string adapter) =>
        AdapterFiles.Prefix + parameterName.Replace($"{UniPeltModel.PrefixContainerName}.{adapter}.", $"{UniPeltModel.PrefixContainerName}.", StringComparison.Ordinal);

    /// <summary>The tensors a UniPELT folder holds, by saved key.</summary>
    public static SortedDictionary<string, Tensor> StateDict(UniPeltModel model)
    {
        string adapter = model.Adapters.Count == 1 ? model.Adapters[0] : throw new PeftSharpException("no UniPELT adapter to save");
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (n, p) in model.NamedParameters()) result[KeyOf(n, adapter)] = p;
        return result;
    }

    /// <summary>Writes the adapter folder (weights and config).</summary>
    public static void Save(UniPeltModel model, string folder, string? baseModelNameOrPath = null)
    {
        if (File.Exists(folder)) throw new PeftSharpException($"{folder}: is a file, expected a folder for the adapter");
        AdapterFiles.WriteFolder(folder, StateDict(model), model.Config!, baseModelNameOrPath);
    }

    /// <summary>Loads a UniPELT folder as adapter <paramref name="adapter"/> (not made active).</summary>
    public static void LoadAdapter(UniPeltModel model, string dir, string adapter, bool trainable = false)
    {
        string weights = AdapterFiles.WeightsPath(dir);
        var config = UniPeltConfig.Load(dir);
        model.AddAdapterCore(adapter, config, seed: null, trainable, Path.Combine(dir, PeftConfig.ConfigFileName));
        try { AdapterFiles.ReadTensors(weights, StateDict(model)); }
        catch
        {
            model.Unload();
            throw;
        }
    }
}
