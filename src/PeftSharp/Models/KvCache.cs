using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Keys and values of past positions, one pair per layer, each [B, kvHeads, T, headDim]. Generation feeds
/// only new tokens and attends over the cache. The cache owns its tensors; dispose it when done.
/// <para>
/// Rows of different lengths share one cache right-aligned: row r's first <see cref="LeftPadding"/>[r] slots are
/// padding. Then the models take each row's positions from <see cref="Positions"/> and callers pass
/// <see cref="KeyMask"/> as the attention mask, so a row computes what it would alone (continuous batching:
/// rows join with <see cref="AppendRows"/> and leave with <see cref="SelectRows"/> between decode steps).
/// </para>
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] keys;
    readonly Tensor?[] values;
    long[]? padding;

    /// <summary>An empty cache with one key/value slot per layer.</summary>
    public KvCache(int layers)
    {
        keys = new Tensor?[layers];
        values = new Tensor?[layers];
    }

    /// <summary>Positions already cached (the offset of the next token), padding slots included.</summary>
    public long Length => keys[0]?.shape[2] ?? 0;

    /// <summary>Rows in the cache (0 while empty).</summary>
    public long Rows => keys[0]?.shape[0] ?? 0;

    /// <summary>
    /// Left-padding slots per batch row, or null when no row is padded: a left-padded batch of prompts (set by the
    /// caller), or rows of different lengths joined by <see cref="AppendRows"/>. Each row's real tokens then take
    /// positions counted from its own first real token (as transformers' generate derives position ids from the
    /// attention mask).
    /// </summary>
    public long[]? LeftPadding
    {
        get => padding;
        set => padding = value;
    }

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

    /// <summary>Appends this step's keys/values for a layer and returns the full keys/values to attend over.</summary>
    public (Tensor keys, Tensor values) Append(int layer, Tensor k, Tensor v)
    {
        var oldK = keys[layer];
        var oldV = values[layer];
        var newK = oldK is null ? k.detach().clone() : cat([oldK, k.detach()], 2);
        var newV = oldV is null ? v.detach().clone() : cat([oldV, v.detach()], 2);
        Replace(layer, newK, newV);
        return (newK, newV);
    }

    void Replace(int layer, Tensor newK, Tensor newV)
    {
        // Held outside any dispose scope: the cache decides their lifetime.
        newK.DetachFromDisposeScope();
        newV.DetachFromDisposeScope();
        keys[layer]?.Dispose();
        values[layer]?.Dispose();
        keys[layer] = newK;
        values[layer] = newV;
    }

    /// <summary>
    /// Absolute positions [B, newTokens] of the next <paramref name="newTokens"/> tokens of each row, or null when no
    /// row is padded (then every row's positions are Length, Length+1, ...).
    /// </summary>
    public Tensor? Positions(long newTokens, Device device)
    {
        if (padding is null) return null;
        using var scope = NewDisposeScope();
        var slots = arange(Length, Length + newTokens, device: device).unsqueeze(0);
        var pads = tensor(padding, device: device).unsqueeze(1);
        return slots.sub(pads).MoveToOuterDisposeScope();
    }

    /// <summary>Attention mask [B, Length + newTokens]: 0 on padding slots, 1 on real ones (null when no row is padded).</summary>
    public Tensor? KeyMask(long newTokens, Device device)
    {
        if (padding is null) return null;
        using var scope = NewDisposeScope();
        var slots = arange(0, Length + newTokens, device: device).unsqueeze(0);
        var pads = tensor(padding, device: device).unsqueeze(1);
        return slots.ge(pads).to_type(ScalarType.Int64).MoveToOuterDisposeScope();
    }

    /// <summary>Keeps these rows, in this order; padding columns that no remaining row needs are dropped.</summary>
    public void SelectRows(IReadOnlyList<int> rows)
    {
        if (keys[0] is null) throw new InvalidOperationException("SelectRows on an empty cache");
        if (rows.Count == 0) { Clear(); return; }
        var pads = rows.Select(r => padding?[r] ?? 0).ToArray();
        long drop = pads.Min();
        using (var scope = NewDisposeScope())
        {
            var index = tensor(rows.Select(r => (long)r).ToArray(), device: keys[0]!.device);
            for (int i = 0; i < keys.Length; i++)
            {
                var k = keys[i]!.index_select(0, index);
                var v = values[i]!.index_select(0, index);
                if (drop > 0) { k = k.narrow(2, drop, k.shape[2] - drop).contiguous(); v = v.narrow(2, drop, v.shape[2] - drop).contiguous(); }
                Replace(i, k, v);
            }
        }
        SetPadding(pads.Select(p => p - drop).ToArray());
    }

    /// <summary>
    /// Adds the rows of <paramref name="other"/> after this cache's rows, aligning both on their last position (the
    /// shorter side is padded on the left). <paramref name="other"/> is left unchanged.
    /// </summary>
    public void AppendRows(KvCache other)
    {
        if (other.keys.Length != keys.Length) throw new ArgumentException("caches of different layer counts");
        if (other.keys[0] is null) return;
        long otherRows = other.Rows;
        var otherPads = other.padding ?? new long[otherRows];
        if (keys[0] is null)
        {
            using var scope = NewDisposeScope();
            for (int i = 0; i < keys.Length; i++) Replace(i, other.keys[i]!.clone(), other.values[i]!.clone());
            SetPadding(otherPads.ToArray());
            return;
        }
        long length = Math.Max(Length, other.Length);
        long growMine = length - Length, growOther = length - other.Length;
        var myPads = padding ?? new long[Rows];
        using (var scope = NewDisposeScope())
        {
            for (int i = 0; i < keys.Length; i++)
            {
                var k = cat([LeftPad(keys[i]!, growMine), LeftPad(other.keys[i]!, growOther)], 0);
                var v = cat([LeftPad(values[i]!, growMine), LeftPad(other.values[i]!, growOther)], 0);
                Replace(i, k, v);
            }
        }
        SetPadding([.. myPads.Select(p => p + growMine), .. otherPads.Select(p => p + growOther)]);
    }

    static Tensor LeftPad(Tensor t, long slots) =>
        slots == 0 ? t : cat([zeros(t.shape[0], t.shape[1], slots, t.shape[3], t.dtype, t.device), t], 2);

    void SetPadding(long[] pads) => padding = pads.All(p => p == 0) ? null : pads;

    void Clear()
    {
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i]?.Dispose(); values[i]?.Dispose();
            keys[i] = values[i] = null;
        }
        padding = null;
    }

    /// <summary>Disposes the cached keys and values.</summary>
    public void Dispose() => Clear();
}
