using System.Text.Json;
using System.Text.Unicode;

namespace PeftSharp.Tensors;

/// <summary>
/// Parses and validates a safetensors JSON header. Everything a later read will trust
/// (dtype, shape, offsets) is checked here, so that reading can never go outside the file
/// or allocate more than the file holds.
/// </summary>
internal sealed class SafetensorsHeader
{
    /// <summary>The largest header we accept; the same limit as Hugging Face's reader.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public const string MetadataKey = "__metadata__";

    private SafetensorsHeader(SortedDictionary<string, SafetensorsTensorInfo> tensors, SortedDictionary<string, string> metadata)
    {
        Tensors = tensors;
        Metadata = metadata;
    }

    public SortedDictionary<string, SafetensorsTensorInfo> Tensors { get; }
    public SortedDictionary<string, string> Metadata { get; }

    /// <param name="path">The file, for error messages.</param>
    /// <param name="json">The header bytes (possibly padded with trailing spaces).</param>
    /// <param name="bufferLength">Bytes in the file after the header: every tensor must fit inside.</param>
    public static SafetensorsHeader Parse(string path, ReadOnlyMemory<byte> json, long bufferLength)
    {
        // JsonDocument checks UTF-8 only when a string is fetched, which would surface as an
        // InvalidOperationException deep in parsing; check the whole header once, up front.
        if (!Utf8.IsValid(json.Span))
            throw SafetensorsErrors.File(path, "header is not valid JSON (it is not valid UTF-8)");

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            // The parser's message says where (line/byte), which helps with hand-edited files.
            throw SafetensorsErrors.File(path, $"header is not valid JSON ({e.Message})");
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw SafetensorsErrors.File(path, $"header must be a JSON object, found {root.ValueKind}");

            var tensors = new SortedDictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
            var metadata = new SortedDictionary<string, string>(StringComparer.Ordinal);
            var sawMetadata = false;
            foreach (var property in root.EnumerateObject())
            {
                if (property.Name == MetadataKey)
                {
                    // JsonDocument keeps duplicate keys; a second copy could hide a value, so refuse it.
                    if (sawMetadata) throw SafetensorsErrors.File(path, $"header has two {MetadataKey} entries");
                    sawMetadata = true;
                    ParseMetadata(path, property.Value, metadata);
                    continue;
                }
                if (tensors.ContainsKey(property.Name))
                    throw SafetensorsErrors.Tensor(path, property.Name, "appears twice in the header; names must be unique");
                tensors.Add(property.Name, ParseTensor(path, property.Name, property.Value, bufferLength));
            }

            CheckNoOverlap(path, tensors.Values);
            return new SafetensorsHeader(tensors, metadata);
        }
    }

    private static void ParseMetadata(string path, JsonElement element, SortedDictionary<string, string> metadata)
    {
        if (element.ValueKind == JsonValueKind.Null) return;
        if (element.ValueKind != JsonValueKind.Object)
            throw SafetensorsErrors.File(path, $"{MetadataKey} must be an object of strings, found {element.ValueKind}");
        foreach (var entry in element.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw SafetensorsErrors.File(path, $"{MetadataKey} entry {SafetensorsErrors.Quote(entry.Name)} must be a string, found {entry.Value.ValueKind}");
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
                throw SafetensorsErrors.File(path, $"{MetadataKey} entry {SafetensorsErrors.Quote(entry.Name)} appears twice");
        }
    }

    private static SafetensorsTensorInfo ParseTensor(string path, string name, JsonElement entry, long bufferLength)
    {
        if (entry.ValueKind != JsonValueKind.Object)
            throw SafetensorsErrors.Tensor(path, name, $"entry must be an object with dtype, shape and data_offsets, found {entry.ValueKind}");

        var dtype = Field(path, name, entry, "dtype", JsonValueKind.String).GetString()!;
        if (!SafetensorsDTypes.TryParse(dtype, out var scalarType, out var elementSize))
            throw SafetensorsErrors.Tensor(path, name, $"unsupported dtype {SafetensorsErrors.Quote(dtype)}; expected one of {SafetensorsDTypes.Known}");

        var shape = ParseShape(path, name, Field(path, name, entry, "shape", JsonValueKind.Array));
        var (begin, end) = ParseOffsets(path, name, Field(path, name, entry, "data_offsets", JsonValueKind.Array), bufferLength);

        var byteLength = ByteLength(path, name, dtype, shape, elementSize);
        if (byteLength != end - begin)
            throw SafetensorsErrors.Tensor(path, name,
                $"shape [{string.Join(", ", shape)}] of {dtype} needs {byteLength} bytes but data_offsets [{begin}, {end}] span {end - begin}");

        return new SafetensorsTensorInfo(name, dtype, scalarType, shape, begin, end);
    }

    private static JsonElement Field(string path, string name, JsonElement entry, string field, JsonValueKind kind)
    {
        if (!entry.TryGetProperty(field, out var value))
            throw SafetensorsErrors.Tensor(path, name, $"entry has no \"{field}\"");
        if (value.ValueKind != kind)
            throw SafetensorsErrors.Tensor(path, name, $"\"{field}\" must be a {kind}, found {value.ValueKind}");
        return value;
    }

    private static long[] ParseShape(string path, string name, JsonElement array)
    {
        var shape = new long[array.GetArrayLength()];
        var i = 0;
        foreach (var dim in array.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out var value) || value < 0)
                throw SafetensorsErrors.Tensor(path, name, $"shape entries must be non-negative integers, found {dim.GetRawText()}");
            shape[i++] = value;
        }
        return shape;
    }

    private static (long Begin, long End) ParseOffsets(string path, string name, JsonElement array, long bufferLength)
    {
        if (array.GetArrayLength() != 2)
            throw SafetensorsErrors.Tensor(path, name, $"data_offsets must be [begin, end], found {array.GetRawText()}");
        var begin = Offset(path, name, array[0]);
        var end = Offset(path, name, array[1]);
        if (begin > end)
            throw SafetensorsErrors.Tensor(path, name, $"data_offsets [{begin}, {end}] end before they begin");
        if (end > (ulong)bufferLength)
            throw SafetensorsErrors.Tensor(path, name,
                $"data_offsets [{begin}, {end}] run past the end of the data ({bufferLength} bytes after the header); the file may be truncated");
        return ((long)begin, (long)end);
    }

    private static ulong Offset(string path, string name, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetUInt64(out var offset))
            throw SafetensorsErrors.Tensor(path, name, $"data_offsets entries must be non-negative integers, found {value.GetRawText()}");
        return offset;
    }

    /// <summary>
    /// Element count times element size, refusing overflow. Zero-sized dimensions are
    /// included as 1 in an extra product so that shapes like [0, 2^40, 2^40] are refused too:
    /// libtorch computes strides from the other dimensions and would overflow on them.
    /// </summary>
    private static long ByteLength(string path, string name, string dtype, long[] shape, int elementSize)
    {
        try
        {
            long count = 1, nonZeroProduct = 1;
            foreach (var dim in shape)
            {
                count = checked(count * dim);
                nonZeroProduct = checked(nonZeroProduct * Math.Max(dim, 1));
            }
            return checked(count * elementSize);
        }
        catch (OverflowException)
        {
            throw SafetensorsErrors.Tensor(path, name, $"shape [{string.Join(", ", shape)}] of {dtype} is too large (its byte size overflows 64 bits)");
        }
    }

    /// <summary>Two tensors sharing bytes would let a write to one show up in the other; the format forbids it.</summary>
    private static void CheckNoOverlap(string path, IEnumerable<SafetensorsTensorInfo> tensors)
    {
        SafetensorsTensorInfo? previous = null;
        // Empty tensors own no bytes, so they cannot overlap anything.
        foreach (var info in tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.DataBegin))
        {
            if (previous != null && info.DataBegin < previous.DataEnd)
                throw SafetensorsErrors.Tensor(path, info.Name,
                    $"data_offsets [{info.DataBegin}, {info.DataEnd}] overlap tensor {SafetensorsErrors.Quote(previous.Name)} at [{previous.DataBegin}, {previous.DataEnd}]");
            previous = info;
        }
    }
}
