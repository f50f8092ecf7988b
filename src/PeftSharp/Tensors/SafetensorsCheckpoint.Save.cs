using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace PeftSharp.Tensors;

public sealed partial class SafetensorsCheckpoint
{
    /// <summary>
    /// Saves tensors into <paramref name="folder"/> (created if needed) the way Hugging Face lays out checkpoints:
    /// if they fit in one shard, a single <c>model.safetensors</c>; otherwise <c>model-00001-of-0000N.safetensors</c>
    /// files plus <c>model.safetensors.index.json</c>. Tensors go to shards in name order, a new shard starting
    /// when the next tensor would push the current one past <paramref name="maxShardBytes"/> (a larger tensor
    /// gets a shard of its own). Each file is replaced atomically; the index is written after the shards.
    /// <paramref name="metadata"/> goes into every file's <c>__metadata__</c> and the index's "metadata"
    /// (where "total_size" is always ours). Then files of the other layout, or stale shards from an earlier
    /// save, are deleted so that <see cref="Open"/> (and Hugging Face) cannot pick up old weights.
    /// </summary>
    public static void SaveSharded(string folder, IEnumerable<KeyValuePair<string, Tensor>> tensors, long maxShardBytes,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        var entries = SafetensorsWriter.Plan(tensors);
        var shards = Pack(entries, maxShardBytes);
        Directory.CreateDirectory(folder);

        var keep = new HashSet<string>(StringComparer.Ordinal);
        if (shards.Count <= 1)
        {
            AtomicFile.Write(System.IO.Path.Combine(folder, SingleFileName), s => SafetensorsWriter.WriteTo(s, entries, metadata));
            keep.Add(SingleFileName);
        }
        else
        {
            var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
            for (var i = 0; i < shards.Count; i++)
            {
                var name = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                var shard = shards[i];
                AtomicFile.Write(System.IO.Path.Combine(folder, name), s => SafetensorsWriter.WriteTo(s, shard, metadata));
                foreach (var entry in shard) weightMap.Add(entry.Name, name);
                keep.Add(name);
            }
            SafetensorsIndex.Write(System.IO.Path.Combine(folder, IndexFileName), weightMap, entries.Sum(e => e.ByteLength), metadata);
            keep.Add(IndexFileName);
        }
        DeleteStale(folder, keep);
    }

    private static List<List<SafetensorsWriter.Entry>> Pack(List<SafetensorsWriter.Entry> entries, long maxShardBytes)
    {
        var shards = new List<List<SafetensorsWriter.Entry>>();
        var current = new List<SafetensorsWriter.Entry>();
        long currentBytes = 0;
        foreach (var entry in entries)
        {
            if (current.Count > 0 && currentBytes + entry.ByteLength > maxShardBytes)
            {
                shards.Add(current);
                (current, currentBytes) = ([], 0);
            }
            current.Add(entry);
            currentBytes += entry.ByteLength;
        }
        if (current.Count > 0 || shards.Count == 0) shards.Add(current);
        return shards;
    }

    [GeneratedRegex(@"^model-\d{5}-of-\d{5}\.safetensors$")]
    private static partial Regex ShardName();

    /// <summary>Deletes checkpoint files this save did not write: only names this class itself produces.</summary>
    private static void DeleteStale(string folder, HashSet<string> keep)
    {
        foreach (var file in Directory.EnumerateFiles(folder))
        {
            var name = System.IO.Path.GetFileName(file);
            if (keep.Contains(name)) continue;
            if (name == SingleFileName || name == IndexFileName || ShardName().IsMatch(name)) File.Delete(file);
        }
    }
}
