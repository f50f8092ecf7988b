using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Keys and values of past positions, one pair per layer, each [B, kvHeads, T, headDim]. Generation feeds
/// only new tokens and attends over the cache. The cache owns its tensors; dispose it when done.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] keys;
    readonly Tensor?[] values;

    public KvCache(int layers)
    {
        keys = new Tensor?[layers];
        values = new Tensor?[layers];
    }

    /// <summary>
    /// Left-padding tokens per batch row, when a batch of prompts was left-padded: each row's real tokens then take
    /// positions counted from its own first real token (as transformers' generate derives position ids from the
    /// attention mask). Only absolute position embeddings (GPT-2) need it; rotary ones are shift-invariant.
    /// </summary>
    public long[]? LeftPadding { get; set; }

    /// <summary>
    /// A new cache holding these positions for <paramref name="rows"/> rows: this cache must hold one row, which
    /// every row of the new one starts from (scoring several continuations of one prompt). The prompt's keys and
    /// values are shared, not copied, until the new cache appends to them.
    /// </summary>
    public KvCache RepeatRows(long rows)
    {
        var copy = new KvCache(keys.Length);
        for (int i = 0; i < keys.Length; i++)
        {
            if (keys[i] is not Tensor k || values[i] is not Tensor v) continue;
            if (k.shape[0] != 1) throw new InvalidOperationException($"RepeatRows needs a one-row cache, this one has {k.shape[0]} rows");
            copy.keys[i] = k.expand(rows, -1, -1, -1);
            copy.values[i] = v.expand(rows, -1, -1, -1);
            copy.keys[i]!.DetachFromDisposeScope();
            copy.values[i]!.DetachFromDisposeScope();
        }
        return copy;
    }

    /// <summary>Positions already cached (the offset of the next token).</summary>
    public long Length => keys[0]?.shape[2] ?? 0;

    /// <summary>Appends this step's keys/values for a layer and returns the full keys/values to attend over.</summary>
    public (Tensor keys, Tensor values) Append(int layer, Tensor k, Tensor v)
    {
        var oldK = keys[layer];
        var oldV = values[layer];
        var newK = oldK is null ? k.detach().clone() : cat([oldK, k.detach()], 2);
        var newV = oldV is null ? v.detach().clone() : cat([oldV, v.detach()], 2);
        // Held outside any dispose scope: the cache decides their lifetime.
        newK.DetachFromDisposeScope();
        newV.DetachFromDisposeScope();
        oldK?.Dispose();
        oldV?.Dispose();
        keys[layer] = newK;
        values[layer] = newV;
        return (newK, newV);
    }

    public void Dispose()
    {
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i]?.Dispose(); values[i]?.Dispose();
            keys[i] = values[i] = null;
        }
    }
}
