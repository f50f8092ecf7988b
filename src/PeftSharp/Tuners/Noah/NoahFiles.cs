using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Noah;

/// <summary>
/// A NOAH supernet's folder (a PeftSharp format): <c>adapter_config.json</c> (<see cref="NoahConfig"/>) and
/// <c>adapter_model.safetensors</c> with the model's parameter names under <c>base_model.model.</c>, adapter name
/// removed: <c>base_model.model.transformer.h.0.attn.c_attn.noah_lora_A.weight</c> [r_max, in], <c>noah_lora_B</c>
/// [out, r_max], <c>…mlp.c_proj.noah_adapter_down.weight</c> [d_max, hidden], <c>noah_adapter_up</c> [hidden, d_max],
/// <c>base_model.model.noah_prompt.weight</c> [p_max, num_layers·2·token_dim].
/// </summary>
public static class NoahFiles
{
    /// <summary>The saved key of a model parameter name.</summary>
    public static string KeyOf(string parameterName, string adapter) =>
        AdapterFiles.Prefix + parameterName.Replace($"{NoahModel.PromptContainerName}.{adapter}.", $"{NoahModel.PromptContainerName}.", StringComparison.Ordinal);

    /// <summary>The tensors of the folder by saved key.</summary>
    public static SortedDictionary<string, Tensor> StateDict(NoahModel model)
    {
        string adapter = model.Adapters.Count == 1 ? model.Adapters[0] : throw new PeftSharpException("no NOAH supernet to save");
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (n, p) in model.NamedParameters()) result[KeyOf(n, adapter)] = p;
        return result;
    }

    /// <summary>Writes the supernet folder.</summary>
    public static void Save(NoahModel model, string folder, string? baseModelNameOrPath = null)
    {
        if (File.Exists(folder)) throw new PeftSharpException($"{folder}: is a file, expected a folder for the adapter");
        AdapterFiles.WriteFolder(folder, StateDict(model), model.Config!, baseModelNameOrPath);
    }

    /// <summary>Loads a NOAH supernet folder (not made active).</summary>
    public static void LoadAdapter(NoahModel model, string dir, string adapter, bool trainable = false)
    {
        string weights = AdapterFiles.WeightsPath(dir);
        var config = NoahConfig.Load(dir);
        model.AddAdapterCore(adapter, config, seed: null, trainable, Path.Combine(dir, PeftConfig.ConfigFileName));
        try { AdapterFiles.ReadTensors(weights, StateDict(model)); }
        catch
        {
            model.Unload();
            throw;
        }
    }
}
