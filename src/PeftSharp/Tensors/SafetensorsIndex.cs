using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Unicode;

namespace PeftSharp.Tensors;

/// <summary>
/// The <c>model.safetensors.index.json</c> of a sharded checkpoint:
/// <c>{"metadata": {...}, "weight_map": {"tensor": "model-00001-of-00002.safetensors", ...}}</c>.
/// </summary>
internal sealed class SafetensorsIndex
{
    public const string FileName = "model.safetensors.index.json";

    private SafetensorsIndex(SortedDictionary<string, string> metadata, SortedDictionary<string, string> weightMap)
    {
        Metadata = metadata;
        WeightMap = weightMap;
    }

    /// <summary>The index's "metadata"; non-string values (like "total_size") are kept as their JSON text.</summary>
    public SortedDictionary<string, string> Metadata { get; }

    /// <summary>Tensor name to shard file name; every shard name is a plain file name in the index's folder.</summary>
    public SortedDictionary<string, string> WeightMap { get; }

    public static SafetensorsIndex Read(string path)
    {
        // An index holds only names; refuse anything big before reading it into memory.
        var length = new FileInfo(path).Length;
        if (length > SafetensorsHeader.MaxHeaderBytes)
            throw SafetensorsErrors.File(path, $"index is {length} bytes; expected at most {SafetensorsHeader.MaxHeaderBytes}");
        var bytes = File.ReadAllBytes(path);
        if (!Utf8.IsValid(bytes))
            throw SafetensorsErrors.File(path, "not valid JSON (it is not valid UTF-8)");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw SafetensorsErrors.File(path, $"not valid JSON ({e.Message})");
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw SafetensorsErrors.File(path, $"must be a JSON object, found {root.ValueKind}");

            var metadata = new SortedDictionary<string, string>(StringComparer.Ordinal);
            if (root.TryGetProperty("metadata", out var meta) && meta.ValueKind != JsonValueKind.Null)
            {
                if (meta.ValueKind != JsonValueKind.Object)
                    throw SafetensorsErrors.File(path, $"\"metadata\" must be an object, found {meta.ValueKind}");
                foreach (var entry in meta.EnumerateObject())
                    metadata[entry.Name] = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : entry.Value.GetRawText();
            }

            if (!root.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw SafetensorsErrors.File(path, "expected a \"weight_map\" object mapping tensor names to shard files");
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw SafetensorsErrors.Tensor(path, entry.Name, $"weight_map value must be a shard file name, found {entry.Value.ValueKind}");
                var shard = entry.Value.GetString()!;
                if (!IsPlainFileName(shard))
                    throw SafetensorsErrors.Tensor(path, entry.Name,
                        $"shard {SafetensorsErrors.Quote(shard)} is not a plain file name; shards must be in the index's own folder");
                if (!weightMap.TryAdd(entry.Name, shard))
                    throw SafetensorsErrors.Tensor(path, entry.Name, "appears twice in weight_map");
            }
            return new SafetensorsIndex(metadata, weightMap);
        }
    }

    /// <summary>
    /// Shard names come from a downloaded file: anything that could name a file outside the
    /// checkpoint folder ("../x", "/etc/x", "C:x", "sub/x") is refused.
    /// </summary>
    private static bool IsPlainFileName(string name) =>
        name.Length > 0
        && name is not "." and not ".."
        && name.IndexOfAny(['/', '\\', ':', '\0']) < 0
        && !Path.IsPathRooted(name)
        && Path.GetFileName(name) == name;

    public static void Write(string path, IReadOnlyDictionary<string, string> weightMap, long totalSize, IReadOnlyDictionary<string, string>? metadata)
    {
        AtomicFile.Write(path, stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            foreach (var (key, value) in (metadata ?? new Dictionary<string, string>()).OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                if (key != "total_size") json.WriteString(key, value);
            }
            // A number, as in Hugging Face's indexes.
            json.WriteNumber("total_size", totalSize);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (tensor, shard) in weightMap.OrderBy(p => p.Key, StringComparer.Ordinal))
                json.WriteString(tensor, shard);
            json.WriteEndObject();
            json.WriteEndObject();
        });
    }
}
