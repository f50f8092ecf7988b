using System.Collections.ObjectModel;
using static TorchSharp.torch;

namespace PeftSharp.Tensors;

/// <summary>
/// A model's weights, in one safetensors file or sharded over several with an index.
/// Gives one view of all tensors, and reads each from whichever file holds it.
/// </summary>
public sealed partial class SafetensorsCheckpoint : IDisposable
{
    /// <summary>The file name of an unsharded checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";
    /// <summary>The index file of a sharded checkpoint (<c>model.safetensors.index.json</c>).</summary>
    public const string IndexFileName = SafetensorsIndex.FileName;

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _fileOf;

    private SafetensorsCheckpoint(string path, List<SafetensorsFile> files, Dictionary<string, SafetensorsFile> fileOf,
        SortedDictionary<string, SafetensorsTensorInfo> tensors, IDictionary<string, string> metadata)
    {
        Path = path;
        _files = files;
        _fileOf = fileOf;
        Tensors = new ReadOnlyDictionary<string, SafetensorsTensorInfo>(tensors);
        Metadata = new ReadOnlyDictionary<string, string>(metadata);
        Files = files.Select(f => f.Path).ToList().AsReadOnly();
    }

    /// <summary>What was opened: the folder, index or file given to <see cref="Open"/>.</summary>
    public string Path { get; }

    /// <summary>The safetensors files opened, in shard-name order.</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>All tensors of the checkpoint, by name, in ordinal name order.</summary>
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors { get; }

    /// <summary>
    /// A single file's <c>__metadata__</c>, or a sharded checkpoint's index "metadata"
    /// (non-string values such as "total_size" as their JSON text).
    /// </summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// Opens <paramref name="path"/>: a folder holding <c>model.safetensors.index.json</c> (preferred) or
    /// <c>model.safetensors</c>; an <c>*.index.json</c> file; or any single safetensors file.
    /// Every file is validated; a missing or bad file is a <see cref="PeftSharpException"/> naming it.
    /// </summary>
    public static SafetensorsCheckpoint Open(string path)
    {
        if (Directory.Exists(path))
        {
            var index = System.IO.Path.Combine(path, IndexFileName);
            if (File.Exists(index)) return OpenSharded(path, index);
            var single = System.IO.Path.Combine(path, SingleFileName);
            if (File.Exists(single)) return OpenSingle(path, single);
            throw SafetensorsErrors.File(path, $"folder has neither {IndexFileName} nor {SingleFileName}");
        }
        if (File.Exists(path))
        {
            return path.EndsWith(".index.json", StringComparison.Ordinal) ? OpenSharded(path, path) : OpenSingle(path, path);
        }
        throw SafetensorsErrors.File(path, $"no such file or folder; expected a model folder (with {IndexFileName} or {SingleFileName}) or a .safetensors file");
    }

    private static SafetensorsCheckpoint OpenSingle(string path, string file)
    {
        var opened = SafetensorsFile.Open(file);
        var fileOf = opened.Tensors.Keys.ToDictionary(name => name, _ => opened, StringComparer.Ordinal);
        var tensors = new SortedDictionary<string, SafetensorsTensorInfo>(opened.Tensors.ToDictionary(), StringComparer.Ordinal);
        return new SafetensorsCheckpoint(path, [opened], fileOf, tensors, opened.Metadata.ToDictionary());
    }

    private static SafetensorsCheckpoint OpenSharded(string path, string indexPath)
    {
        var index = SafetensorsIndex.Read(indexPath);
        var folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(indexPath))!;
        var shards = new SortedDictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            var fileOf = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            var tensors = new SortedDictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
            foreach (var (tensor, shardName) in index.WeightMap)
            {
                if (!shards.TryGetValue(shardName, out var shard))
                {
                    var shardPath = System.IO.Path.Combine(folder, shardName);
                    if (!File.Exists(shardPath))
                        throw SafetensorsErrors.Tensor(indexPath, tensor, $"its shard {SafetensorsErrors.Quote(shardName)} does not exist (looked for {shardPath})");
                    shards.Add(shardName, shard = SafetensorsFile.Open(shardPath));
                }
                if (!shard.Tensors.TryGetValue(tensor, out var info))
                    throw SafetensorsErrors.Tensor(indexPath, tensor, $"the index puts it in {shard.Path}, which has no such tensor");
                fileOf.Add(tensor, shard);
                tensors.Add(tensor, info);
            }
            return new SafetensorsCheckpoint(path, shards.Values.ToList(), fileOf, tensors, index.Metadata);
        }
        catch
        {
            foreach (var shard in shards.Values) shard.Dispose();
            throw;
        }
    }

    /// <inheritdoc cref="SafetensorsFile.Read"/>
    public Tensor Read(string name, Device? device = null, ScalarType? dtype = null) => FileOf(name).Read(name, device, dtype);

    /// <inheritdoc cref="SafetensorsFile.ReadInto"/>
    public void ReadInto(string name, Tensor destination) => FileOf(name).ReadInto(name, destination);

    /// <summary>The path of the file holding a tensor (its shard, for sharded checkpoints), for messages.</summary>
    public string FilePathOf(string name) => FileOf(name).Path;

    /// <summary>Whether a folder (or file) holds a checkpoint that <see cref="Open"/> would find.</summary>
    public static bool Exists(string path) =>
        Directory.Exists(path)
            ? File.Exists(System.IO.Path.Combine(path, IndexFileName)) || File.Exists(System.IO.Path.Combine(path, SingleFileName))
            : File.Exists(path);

    private SafetensorsFile FileOf(string name)
    {
        if (!_fileOf.TryGetValue(name, out var file))
            throw SafetensorsErrors.Tensor(Path, name, "not in this checkpoint");
        return file;
    }

    /// <summary>Closes every shard file.</summary>
    public void Dispose()
    {
        foreach (var file in _files) file.Dispose();
    }
}
