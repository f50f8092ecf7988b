using PeftSharp.Peft;
using PeftSharp.Tuners.Prompts;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Attempt;

/// <summary>
/// An ATTEMPT adapter folder: <c>adapter_config.json</c> (peft_type ATTEMPT, <see cref="AttemptConfig"/>) and
/// <c>adapter_model.safetensors</c> with <c>prompt_embeddings</c> [N, D] (the target prompt), <c>source_prompts</c>
/// [K, N, D], <c>attn_W_down.weight</c> [h, D], <c>attn_W_up.weight</c> [D, h], <c>layer_norm.weight</c> and
/// <c>layer_norm.bias</c> [D]; float32, unprefixed. The folder is self-contained: the sources travel with it.
/// </summary>
public static class AttemptFiles
{
    static Dictionary<string, Tensor> Tensors(AttemptPromptModule m) => new()
    {
        [PromptFiles.TensorName] = m.EmbeddingWeight,
        ["source_prompts"] = m.SourcePrompts,
        ["attn_W_down.weight"] = m.DownWeight,
        ["attn_W_up.weight"] = m.UpWeight,
        ["layer_norm.weight"] = m.NormWeight,
        ["layer_norm.bias"] = m.NormBias,
    };

    /// <summary>Writes one adapter (a subfolder for names other than "default"); returns the folder.</summary>
    public static string Save(AttemptModel model, string dir, string adapter = AdapterFiles.DefaultAdapter, string? baseModelNameOrPath = null)
    {
        var config = model.Configs[adapter];
        string folder = AdapterFiles.FolderFor(dir, adapter);
        var copies = Tensors(model.AttemptModule(adapter)).Select(p => new KeyValuePair<string, Tensor>(p.Key, p.Value.detach().cpu())).ToList();
        try { AdapterFiles.WriteFolder(folder, copies, config, baseModelNameOrPath); }
        finally { foreach (var c in copies) c.Value.Dispose(); }
        return folder;
    }

    /// <summary>Loads an ATTEMPT folder as a new adapter; it is not made active.</summary>
    public static void LoadAdapter(AttemptModel model, string dir, string adapter, bool trainable = false)
    {
        string weights = AdapterFiles.WeightsPath(dir);
        var config = AttemptConfig.Load(dir);
        model.AddAdapterCore(adapter, config, seed: null, trainable, inference: true, source: Path.Combine(dir, PeftConfig.ConfigFileName));
        try { AdapterFiles.ReadTensors(weights, Tensors(model.AttemptModule(adapter))); }
        catch
        {
            model.DeleteAdapter(adapter);
            throw;
        }
    }
}
