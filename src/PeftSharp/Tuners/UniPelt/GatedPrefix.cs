using PeftSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.UniPelt;

/// <summary>The prefix table of a UniPELT adapter: one parameter <c>weight</c> [P, num_layers·2·token_dim], PEFT's prefix layout.</summary>
internal sealed class PrefixTable : nn.Module
{
#pragma warning disable IDE1006 // torch parameter name
    public readonly Parameter weight;
#pragma warning restore IDE1006

    public PrefixTable(long rows, long width, Generator? gen, Device device) : base(nameof(PrefixTable))
    {
        weight = new Parameter(empty([rows, width], ScalarType.Float32, device));
        using (no_grad()) weight.normal_(0, 1, gen); // torch.nn.Embedding's init, as PEFT's PrefixEncoder
        RegisterComponents();
    }
}

/// <summary>
/// UniPELT's gated prefix (extension points 3 and 5). The table is read as PEFT's prefix tuning reads
/// <c>prompt_embeddings</c> (view [P, num_layers·2, heads, head_dim]; layer l's keys at 2l, values at 2l + 1). As a
/// hidden-state tap it sees the residual stream entering block l and computes the gate of every example,
/// <c>g_l = σ(w_l·h_l[b, 0] + b_l)</c> from its first position (so that a position never sees later tokens through the
/// gate, and generation with the KV cache equals generation without it); the prefix values of block l are scaled by
/// g_l, the keys are not. With the cache the prefix (and its gate) enters on the first forward only.
/// </summary>
internal sealed class GatedPrefix(PrefixTable table, IReadOnlyList<TorchSharp.Modules.Linear> gates, int length, int heads, int tokenDim) : IKvPrefix, IHiddenStateTap, IDisposable
{
    readonly Tensor?[] current = new Tensor?[gates.Count];

    public int Length => length;

    /// <summary>When set, receives the gates each prefix forward uses, per layer.</summary>
    public GateMeter[]? Meters { get; set; }

    public void Observe(int layer, Tensor hidden)
    {
        if (layer >= gates.Count) return;
        using var scope = NewDisposeScope();
        var first = hidden.select(1, 0); // [B, H]
        var g = Gate.Apply(gates[layer], first).MoveToOuterDisposeScope(); // [B, 1]
        current[layer]?.Dispose();
        current[layer] = g.DetachFromDisposeScope();
    }

    /// <summary>The gate of each example at <paramref name="layer"/> from the last forward, [B, 1] (for tests and inspection).</summary>
    public Tensor? GateOf(int layer) => current[layer];

    public (Tensor Keys, Tensor Values) For(int layer, long batch, ScalarType dtype, Device device)
    {
        var g = current[layer] ?? throw new PeftSharpException($"UniPELT prefix: no gate computed for layer {layer} (the model forward did not run the hidden-state taps)");
        if (g.shape[0] != batch) throw new PeftSharpException($"UniPELT prefix: gate batch {g.shape[0]} does not match the forward's batch {batch}");
        Meters?[layer].Add(g);
        using var scope = NewDisposeScope();
        int hd = tokenDim / heads;
        var view = table.weight.view(length, gates.Count * 2, heads, hd);
        var keys = view.select(1, 2 * layer).permute(1, 0, 2).unsqueeze(0).to(dtype, device);
        var values = view.select(1, 2 * layer + 1).permute(1, 0, 2).unsqueeze(0); // [1, heads, P, hd]
        values = values.mul(g.view(batch, 1, 1, 1)).to(dtype, device);
        return (keys.MoveToOuterDisposeScope(), values.MoveToOuterDisposeScope());
    }

    public void Dispose()
    {
        for (int i = 0; i < current.Length; i++)
        {
            current[i]?.Dispose();
            current[i] = null;
        }
    }
}
