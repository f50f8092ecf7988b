namespace PeftSharp.Training;

/// <summary>Where a <see cref="DataLoader"/> is: the epoch and the index of the next batch within it.</summary>
public readonly record struct DataPosition(long Epoch, int Batch);

/// <summary>
/// Batches of example indices, reshuffled every epoch. Each epoch's order is a pure function of (seed, epoch)
/// (<see cref="SeededShuffle"/>), so the loader's whole state is its <see cref="Position"/>: saving and restoring
/// it resumes the exact same sequence of batches. The last batch of an epoch may be smaller; epochs follow each
/// other without end, the caller decides when to stop.
/// </summary>
public sealed class DataLoader
{
    int[] _order;
    DataPosition _position;

    /// <summary>
    /// Batches of <paramref name="batchSize"/> example indices out of <paramref name="count"/>, in a new seeded order each epoch when <paramref name="shuffle"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">No examples, or a batch size under 1.</exception>
    public DataLoader(int count, int batchSize, ulong seed, bool shuffle = true)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "a data loader needs at least one example");
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "batch size must be at least 1");
        Count = count;
        BatchSize = batchSize;
        Seed = seed;
        Shuffle = shuffle;
        _order = Order(0);
    }

    /// <summary>Number of examples.</summary>
    public int Count { get; }
    /// <summary>Examples per batch (the last batch of an epoch may be smaller).</summary>
    public int BatchSize { get; }
    /// <summary>Seed of the per-epoch order.</summary>
    public ulong Seed { get; }
    /// <summary>Whether each epoch is shuffled.</summary>
    public bool Shuffle { get; }
    /// <summary>Batches in one epoch (the last may be partial).</summary>
    public int BatchesPerEpoch => (Count + BatchSize - 1) / BatchSize;

    /// <summary>Where the loader is (epoch and batch); set it to resume.</summary>
    public DataPosition Position
    {
        get => _position;
        set
        {
            if (value.Epoch < 0 || value.Batch < 0 || value.Batch >= BatchesPerEpoch)
                throw new ArgumentOutOfRangeException(nameof(value), value, $"expected an epoch ≥ 0 and a batch in [0, {BatchesPerEpoch})");
            if (value.Epoch != _position.Epoch) _order = Order(value.Epoch);
            _position = value;
        }
    }

    /// <summary>The indices of the next batch; moves to the next epoch after its last batch.</summary>
    public int[] Next()
    {
        int start = _position.Batch * BatchSize;
        var batch = _order[start..Math.Min(start + BatchSize, Count)];
        Position = _position.Batch + 1 < BatchesPerEpoch ? _position with { Batch = _position.Batch + 1 } : new DataPosition(_position.Epoch + 1, 0);
        return batch;
    }

    /// <summary>Epochs completed, with the current one's fraction (for logs).</summary>
    public double EpochProgress => _position.Epoch + (double)_position.Batch / BatchesPerEpoch;

    int[] Order(long epoch) =>
        Shuffle ? SeededShuffle.Permutation(Count, SeededShuffle.EpochSeed(Seed, epoch)) : Enumerable.Range(0, Count).ToArray();
}
