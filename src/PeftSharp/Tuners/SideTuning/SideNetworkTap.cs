using System.Runtime.CompilerServices;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SideTuning;

/// <summary>
/// Extension point 5 for the side networks. The backbone runs without autograd (<see cref="BackboneWithoutGrad"/>):
/// its hidden states reach the taps with requires_grad false and none of its activations are kept for backward; the
/// side network records gradients. LST: side = down_0(h_0); after block i, side = side_block_i(side), then
/// side = μ_i·down_{i+1}(h_{i+1}) + (1 − μ_i)·side; the final hidden states get + up(norm(side)). Side tuning: the
/// side network runs on down_0(h_0) alone, and the final hidden states become α·h + (1 − α)·up(norm(side)).
/// With a key/value cache the side blocks keep their own cache, paired with the caller's.
/// </summary>
internal sealed class SideNetworkTap(SideNetwork net) : IHiddenStateTap
{
    readonly ConditionalWeakTable<KvCache, KvCache> caches = new();
    KvCache? cache;
    Tensor? mask;
    SideForward? call;
    Tensor? side;

    public bool BackboneWithoutGrad => true;

    public void Begin(KvCache? cache, Tensor? attentionMask)
    {
        this.cache = cache;
        mask = attentionMask;
        call = null;
        side = null;
    }

    public void Observe(int layer, Tensor hidden)
    {
        if (layer == 0)
        {
            call = Prepare(hidden);
            side = net.Start(hidden);
            if (!net.Ladder)
                for (int i = 0; i < net.Blocks.Count; i++) side = net.Block(i, side, call);
            return;
        }
        if (!net.Ladder) return;
        if (side is null || call is null) throw new InvalidOperationException("side network: a tap came before the embeddings");
        side = net.Block(layer - 1, side, call);
        side = net.Merge(layer - 1, side, hidden);
    }

    SideForward Prepare(Tensor embeddings)
    {
        long t = embeddings.shape[1];
        KvCache? sideCache = null;
        if (cache is not null)
        {
            sideCache = caches.GetValue(cache, _ => new KvCache(net.Blocks.Count));
            if (sideCache.Length != cache.Length || (cache.Length > 0 && sideCache.Rows != cache.Rows))
                throw new PeftSharpException("side network: the key/value cache was changed outside the model's forward (rows repeated, selected or joined); LST and side tuning generate with one cache per batch (docs/side-tuning.md)");
        }
        var rowPositions = cache?.Positions(t, embeddings.device);
        var (cos, sin) = net.Rotary(rowPositions, cache?.Length ?? 0, t, embeddings.device);
        return new SideForward(sideCache, mask, cos, sin);
    }

    public Tensor Final(Tensor hidden)
    {
        if (side is null) throw new InvalidOperationException("side network: Final before any tap");
        var output = net.Output(side).to_type(hidden.dtype);
        side = null;
        call = null;
        if (net.Ladder) return hidden.add(output);
        var alpha = net.Blend!.sigmoid().to_type(hidden.dtype);
        return hidden.mul(alpha).add(output.mul(alpha.neg().add(1)));
    }
}
