using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Hyperformer;

/// <summary>
/// Extension point 2 for Hyperformer: after the attention or MLP sub-layer of one block, each example's output o
/// becomes o + U_t·swish(D_t·o + b_D,t) + b_U,t with its task t's generated weights (the model's task ids).
/// </summary>
internal sealed class HyperformerHook(Hypernetwork network, ExtensionPoints extensions) : ISubLayerHook
{
    public HookPlacement Placement => HookPlacement.Serial;

    public Tensor Forward(SubLayerCall call)
    {
        using var scope = NewDisposeScope();
        var o = call.Output;
        long batch = o.shape[0];
        var ids = TaskIdRange.Check(extensions.TaskIds, batch, network.Tasks, "Hyperformer");
        using var w = network.Generate(ids, call.Layer, call.Kind);
        var x = o.to(ScalarType.Float32);
        var hidden = nn.functional.silu(einsum("bth,bdh->btd", x, w.Down).add(w.DownBias.unsqueeze(1)));
        var up = einsum("btd,bhd->bth", hidden, w.Up).add(w.UpBias.unsqueeze(1));
        return o.add(up.to(o.dtype)).MoveToOuterDisposeScope();
    }
}
