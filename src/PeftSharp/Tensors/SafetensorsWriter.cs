using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tensors;

/// <summary>
/// Writes safetensors files: tensors sorted by name (ordinal), data laid out in that order,
/// header padded with spaces so the data starts on an 8-byte boundary.
/// </summary>
public static class SafetensorsWriter
{
    /// <summary>
    /// Saves tensors (any device, any layout) to <paramref name="path"/>, replacing it atomically.
    /// Tensors are copied to the CPU and written one at a time, so at most one tensor's CPU copy
    /// exists at once besides the caller's tensors.
    /// </summary>
    /// <exception cref="ArgumentException">Two tensors share a name, or a tensor's dtype has no safetensors name.</exception>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var entries = Plan(tensors);
        AtomicFile.Write(path, stream => WriteTo(stream, entries, metadata));
    }

    /// <summary>A tensor to write, with its dtype name and byte size worked out up front for the header.</summary>
    internal sealed record Entry(string Name, Tensor Tensor, string DType, long ByteLength);

    /// <summary>Sorts by name and checks names and dtypes, before any file is touched.</summary>
    internal static List<Entry> Plan(IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        var entries = new List<Entry>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, tensor) in tensors)
        {
            if (name == SafetensorsHeader.MetadataKey)
                throw new ArgumentException($"\"{name}\" is reserved for the header's metadata and cannot name a tensor", nameof(tensors));
            if (!names.Add(name))
                throw new ArgumentException($"tensor name \"{name}\" appears twice", nameof(tensors));
            if (!SafetensorsDTypes.TryGetName(tensor.dtype, out var dtype, out var size))
                throw new ArgumentException($"tensor \"{name}\" has dtype {tensor.dtype}, which safetensors files cannot hold here; supported: {SafetensorsDTypes.Known}", nameof(tensors));
            entries.Add(new Entry(name, tensor, dtype, checked(tensor.numel() * size)));
        }
        entries.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return entries;
    }

    internal static void WriteTo(Stream stream, IReadOnlyList<Entry> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; big-endian hosts are not supported");

        var header = Header(entries, metadata);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);

        foreach (var entry in entries)
        {
            // The scope frees the CPU/contiguous copies (when they are copies) after each tensor;
            // the caller's own tensor was created outside the scope and is left alone.
            using var scope = torch.NewDisposeScope();
            var cpu = entry.Tensor.detach().cpu().contiguous();
            TensorMemory.WriteTo(cpu, stream);
        }
    }

    /// <summary>The JSON header, padded with spaces to a multiple of 8 bytes.</summary>
    internal static byte[] Header(IReadOnlyList<Entry> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        // Relaxed escaping keeps names like "a+b" readable; the header is never embedded in HTML.
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(SafetensorsHeader.MetadataKey);
                foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                    json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var entry in entries)
            {
                json.WriteStartObject(entry.Name);
                json.WriteString("dtype", entry.DType);
                json.WriteStartArray("shape");
                foreach (var dim in entry.Tensor.shape) json.WriteNumberValue(dim);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset += entry.ByteLength);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        var padding = (int)((8 - buffer.Length % 8) % 8);
        for (var i = 0; i < padding; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }
}
