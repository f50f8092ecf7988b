using System.Buffers.Binary;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tensors;

/// <summary>Builds safetensors files byte by byte, independently of the writer under test.</summary>
internal static class SafetensorsBytes
{
    /// <summary>u64 little-endian length of <paramref name="json"/> (or <paramref name="headerLength"/>), the JSON, then <paramref name="data"/>.</summary>
    public static byte[] Build(string json, byte[]? data = null, ulong? headerLength = null)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var bytes = new byte[8 + header.Length + (data?.Length ?? 0)];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data?.CopyTo(bytes, 8 + header.Length);
        return bytes;
    }

    public static string Write(TempDir folder, string name, string json, byte[]? data = null, ulong? headerLength = null)
    {
        var path = folder.File(name);
        File.WriteAllBytes(path, Build(json, data, headerLength));
        return path;
    }

    /// <summary>The raw bytes of a CPU tensor.</summary>
    public static byte[] Raw(Tensor tensor)
    {
        using var contiguous = tensor.contiguous();
        return contiguous.bytes.ToArray();
    }

    /// <summary>A CPU tensor whose memory is exactly <paramref name="raw"/>.</summary>
    public static Tensor FromRaw(ScalarType type, long[] shape, byte[] raw)
    {
        var tensor = torch.empty(shape, type);
        tensor.bytes = raw;
        return tensor;
    }

    public static byte[] Floats(params float[] values) => Pack(values, 4, (s, v) => BinaryPrimitives.WriteSingleLittleEndian(s, v));
    public static byte[] Doubles(params double[] values) => Pack(values, 8, (s, v) => BinaryPrimitives.WriteDoubleLittleEndian(s, v));
    public static byte[] UInt16s(params ushort[] values) => Pack(values, 2, (s, v) => BinaryPrimitives.WriteUInt16LittleEndian(s, v));
    public static byte[] Int16s(params short[] values) => Pack(values, 2, (s, v) => BinaryPrimitives.WriteInt16LittleEndian(s, v));
    public static byte[] Int32s(params int[] values) => Pack(values, 4, (s, v) => BinaryPrimitives.WriteInt32LittleEndian(s, v));
    public static byte[] Int64s(params long[] values) => Pack(values, 8, (s, v) => BinaryPrimitives.WriteInt64LittleEndian(s, v));

    private delegate void Writer<T>(Span<byte> span, T value);

    private static byte[] Pack<T>(T[] values, int size, Writer<T> write)
    {
        var bytes = new byte[values.Length * size];
        for (var i = 0; i < values.Length; i++) write(bytes.AsSpan(i * size, size), values[i]);
        return bytes;
    }
}
