using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SideTuning;

/// <summary>
/// The on-disk format of LST and side-tuning adapters (PeftSharp's own; PEFT has no such method):
/// <c>adapter_config.json</c> (peft_type LST or SIDE_TUNING, reduction_factor, side_init, pruning_norm, and gate_alpha /
/// gate_temperature or blend_init) and <c>adapter_model.safetensors</c> holding every side-network parameter, float32,
/// as <c>base_model.model.side_network.{name}</c> (the adapter name left out, as PEFT does), e.g.
/// <c>…side_network.downsamples.0.weight</c>, <c>…side_network.gates</c>, <c>…side_network.h.0.attn.c_attn.weight</c>.
/// </summary>
public static class SideTuningFiles
{
    /// <summary>The key prefix of every tensor: <c>base_model.model.side_network.</c>.</summary>
    public const string KeyPrefix = AdapterFiles.Prefix + SideTuningModel.ContainerName + ".";

    /// <summary>Writes one adapter (a subfolder for names other than "default"); returns the folder.</summary>
    public static string Save(SideTuningModel model, string dir, string adapter = AdapterFiles.DefaultAdapter, string? baseModelNameOrPath = null)
    {
        var config = model.ConfigOf(adapter);
        string folder = AdapterFiles.FolderFor(dir, adapter);
        var tensors = model.Network(adapter).named_parameters().Select(p => new KeyValuePair<string, Tensor>(KeyPrefix + p.name, p.parameter)).ToList();
        AdapterFiles.WriteFolder(folder, tensors, config, baseModelNameOrPath);
        return folder;
    }

    /// <summary>Loads an LST / side-tuning folder as a new adapter (not active); shapes are checked against this model.</summary>
    public static void LoadAdapter(SideTuningModel model, string dir, string adapter, bool trainable = false)
    {
        string weights = AdapterFiles.WeightsPath(dir);
        string configPath = Path.Combine(dir, PeftConfig.ConfigFileName);
        var config = model.Tuner.LoadConfig(dir);
        model.AddAdapterCore(adapter, config, seed: null, trainable, inference: true, source: configPath);
        try
        {
            var expected = model.Network(adapter).named_parameters().ToDictionary(p => KeyPrefix + p.name, p => (Tensor)p.parameter);
            AdapterFiles.ReadTensors(weights, expected);
        }
        catch
        {
            model.DeleteAdapter(adapter);
            throw;
        }
    }
}
