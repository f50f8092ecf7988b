using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Hyperformer;

/// <summary>
/// A Hyperformer folder: <c>adapter_config.json</c> (peft_type HYPERFORMER, <see cref="HyperformerConfig"/>) and
/// <c>adapter_model.safetensors</c> with the hypernetwork's parameters under their module names
/// (<c>task_embedding.weight</c>, <c>layer_id_embedding.weight</c>, <c>position_embedding.weight</c>,
/// <c>task_projector.0.weight</c> …, <c>down_weight_generator.weight</c> …), float32, unprefixed.
/// </summary>
public static class HyperformerFiles
{
    static Dictionary<string, Tensor> Tensors(Hypernetwork network) =>
        network.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);

    /// <summary>Writes one adapter (a subfolder for names other than "default"); returns the folder.</summary>
    public static string Save(HyperformerModel model, string dir, string adapter = AdapterFiles.DefaultAdapter, string? baseModelNameOrPath = null)
    {
        var config = model.Config(adapter);
        string folder = AdapterFiles.FolderFor(dir, adapter);
        var copies = Tensors(model.Network(adapter)).Select(p => new KeyValuePair<string, Tensor>(p.Key, p.Value.detach().cpu())).ToList();
        try { AdapterFiles.WriteFolder(folder, copies, config, baseModelNameOrPath); }
        finally { foreach (var c in copies) c.Value.Dispose(); }
        return folder;
    }

    /// <summary>Loads a Hyperformer folder as a new adapter; it is not made active.</summary>
    public static void LoadAdapter(HyperformerModel model, string dir, string adapter, bool trainable = false)
    {
        var config = HyperformerConfig.Load(dir);
        string weights = AdapterFiles.WeightsPath(dir);
        model.AddAdapter(adapter, config, seed: null, trainable);
        try { AdapterFiles.ReadTensors(weights, Tensors(model.Network(adapter))); }
        catch
        {
            model.DeleteAdapter(adapter);
            throw;
        }
    }
}
