using PeftSharp.Models;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.Hyperformer;
using static TorchSharp.torch;

namespace PeftSharp.Composition;

/// <summary>
/// Writes the adapter a Hyperformer hypernetwork generates for one task as an ordinary AdapterHub bottleneck adapter
/// (Houlsby: serial after attention and after the MLP, swish, reduction factor as the Hyperformer's), which loads
/// with <c>--adapter</c> without the hypernetwork and gives the same logits as the Hyperformer run with that task id.
/// </summary>
public static class HyperformerExport
{
    /// <summary>The AdapterHub config the generated adapters correspond to.</summary>
    public static AdapterHubConfig HoulsbyFor(HyperformerConfig config) => AdapterHubConfig.Houlsby(config.ReductionFactor);

    /// <summary>
    /// Generates every layer's adapters of <paramref name="adapter"/> for task <paramref name="task"/> and writes them to
    /// <paramref name="outDir"/> under AdapterHub's name <paramref name="name"/>; returns the folder.
    /// </summary>
    public static string Export(HyperformerModel hyper, string adapter, int task, string outDir, string name = "hyperformer_task")
    {
        var config = hyper.Config(adapter);
        if (task < 0 || task >= config.NumTasks)
            throw new PeftSharpException($"--task {task}: out of range; this Hyperformer has num_tasks {config.NumTasks} (ids 0 … {config.NumTasks - 1})");
        var model = hyper.Model;
        var network = hyper.Network(adapter);
        var hub = AdapterHubModel.For(model);
        if (hub.Configs.ContainsKey(name)) throw new PeftSharpException($"an AdapterHub adapter named \"{name}\" is already loaded");
        hub.AddAdapter(name, HoulsbyFor(config), seed: 0, trainable: false);
        try
        {
            using var ids = tensor(new long[] { task });
            for (int layer = 0; layer < model.Config.Layers; layer++)
                foreach (var kind in new[] { SubLayerKind.Attention, SubLayerKind.Mlp })
                {
                    using var scope = NewDisposeScope();
                    using var w = network.Generate(ids, layer, kind);
                    var target = hub.Locations[(layer, kind)].adapters[name];
                    var slots = target.named_parameters().ToDictionary(p => p.name, p => p.parameter);
                    using var _ = no_grad();
                    Copy(slots, "adapter_down.0.weight", w.Down[0]);
                    Copy(slots, "adapter_down.0.bias", w.DownBias[0]);
                    Copy(slots, "adapter_up.weight", w.Up[0]);
                    Copy(slots, "adapter_up.bias", w.UpBias[0]);
                }
            AdapterHubFiles.Save(hub, outDir, name);
        }
        finally
        {
            hub.DeleteAdapter(name);
        }
        return outDir;
    }

    static void Copy(Dictionary<string, TorchSharp.Modules.Parameter> slots, string key, Tensor value)
    {
        var slot = slots.TryGetValue(key, out var p) ? p : throw new InvalidOperationException($"the AdapterHub adapter has no {key}");
        if (!slot.shape.SequenceEqual(value.shape))
            throw new InvalidOperationException($"{key}: generated [{string.Join(", ", value.shape)}] but the adapter holds [{string.Join(", ", slot.shape)}]");
        slot.copy_(value);
    }
}
