using PeftSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Hyperformer;

/// <summary>The weights of one generated bottleneck adapter (batched over examples: a leading [B] dimension).</summary>
/// <param name="Down">D [.., d, H] (torch.nn.Linear layout: out × in).</param>
/// <param name="DownBias">b_D [.., d].</param>
/// <param name="Up">U [.., H, d].</param>
/// <param name="UpBias">b_U [.., H].</param>
public sealed record GeneratedAdapter(Tensor Down, Tensor DownBias, Tensor Up, Tensor UpBias) : IDisposable
{
    /// <summary>Disposes the four tensors.</summary>
    public void Dispose()
    {
        Down.Dispose();
        DownBias.Dispose();
        Up.Dispose();
        UpBias.Dispose();
    }
}

/// <summary>
/// Hyperformer's shared hypernetwork: <c>task_embedding</c> [num_tasks, e], <c>layer_id_embedding</c> [num_layers, e],
/// <c>position_embedding</c> [2, e] (0 attention, 1 MLP); <c>task_projector</c> (Linear(3e, hidden), ReLU,
/// Linear(hidden, p)) maps their concatenation to I; four generators read I: <c>down_weight_generator</c>
/// (p → d·H), <c>down_bias_generator</c> (p → d), <c>up_weight_generator</c> (p → H·d), <c>up_bias_generator</c> (p → H).
/// The up generators start at zero, so a new Hyperformer leaves the model unchanged.
/// </summary>
public sealed class Hypernetwork : nn.Module
{
    readonly Embedding task_embedding;
    readonly Embedding layer_id_embedding;
    readonly Embedding position_embedding;
    readonly Sequential task_projector;
    readonly TorchSharp.Modules.Linear down_weight_generator;
    readonly TorchSharp.Modules.Linear down_bias_generator;
    readonly TorchSharp.Modules.Linear up_weight_generator;
    readonly TorchSharp.Modules.Linear up_bias_generator;
    readonly int hidden, bottleneck;

    /// <summary>A hypernetwork for <paramref name="config"/> (prepared), initialised from <paramref name="gen"/>.</summary>
    public Hypernetwork(HyperformerConfig config, Generator? gen, Device device) : base(nameof(Hypernetwork))
    {
        hidden = config.HiddenSize!.Value;
        bottleneck = config.BottleneckSize;
        int e = config.TaskEmbeddingDim, p = config.ProjectedTaskEmbeddingDim;
        task_embedding = DefaultInit.Embedding(config.NumTasks, e, gen, device);
        layer_id_embedding = DefaultInit.Embedding(config.NumLayers!.Value, e, gen, device);
        position_embedding = DefaultInit.Embedding(2, e, gen, device);
        task_projector = nn.Sequential(DefaultInit.Linear(3 * e, config.TaskHiddenDim, gen, device), nn.ReLU(), DefaultInit.Linear(config.TaskHiddenDim, p, gen, device));
        down_weight_generator = DefaultInit.Linear(p, (long)bottleneck * hidden, gen, device);
        down_bias_generator = DefaultInit.Linear(p, bottleneck, gen, device);
        up_weight_generator = DefaultInit.Linear(p, (long)hidden * bottleneck, gen, device);
        up_bias_generator = DefaultInit.Linear(p, hidden, gen, device);
        using (no_grad())
        {
            up_weight_generator.weight!.zero_(); up_weight_generator.bias!.zero_();
            up_bias_generator.weight!.zero_(); up_bias_generator.bias!.zero_();
        }
        RegisterComponents();
    }

    /// <summary>The model's hidden size H.</summary>
    public int Hidden => hidden;
    /// <summary>The bottleneck width d.</summary>
    public int Bottleneck => bottleneck;
    /// <summary>Number of tasks.</summary>
    public long Tasks => task_embedding.weight!.shape[0];

    /// <summary>The adapters of layer <paramref name="layer"/> at <paramref name="kind"/> for each task in <paramref name="taskIds"/> [B].</summary>
    public GeneratedAdapter Generate(Tensor taskIds, int layer, SubLayerKind kind)
    {
        using var scope = NewDisposeScope();
        var device = task_embedding.weight!.device;
        var ids = taskIds.to(ScalarType.Int64, device);
        long b = ids.shape[0];
        var task = task_embedding.forward(ids);                                                    // [B, e]
        using var layerId = tensor(new long[] { layer }, device: device);
        using var position = tensor(new long[] { kind == SubLayerKind.Attention ? 0 : 1 }, device: device);
        var l = layer_id_embedding.forward(layerId).expand(b, -1);
        var pos = position_embedding.forward(position).expand(b, -1);
        var z = task_projector.forward(cat([task, l, pos], 1));                                      // [B, p]
        var result = new GeneratedAdapter(
            down_weight_generator.forward(z).view(b, bottleneck, hidden),
            down_bias_generator.forward(z),
            up_weight_generator.forward(z).view(b, hidden, bottleneck),
            up_bias_generator.forward(z));
        foreach (var t in new[] { result.Down, result.DownBias, result.Up, result.UpBias }) t.MoveToOuterDisposeScope();
        return result;
    }
}
