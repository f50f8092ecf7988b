using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace PeftSharp.Tests.Reference;

/// <summary>Element types the naive safetensors writer/reader understands.</summary>
public enum NaiveDType
{
    F32,
    BF16,
}

/// <summary>
/// One tensor for <see cref="NaiveSafetensors"/>. <see cref="Values"/> are float32 values in row-major order;
/// for <see cref="NaiveDType.BF16"/> they are rounded (round-to-nearest-even) when serialized.
/// </summary>
public sealed record NaiveTensor(string Name, NaiveDType DType, int[] Shape, float[] Values)
{
    public long ElementCount => Shape.Aggregate(1L, (a, d) => a * d);
}

/// <summary>
/// A deliberately minimal, independent safetensors writer and reader (F32 and BF16 only), written from the
/// format description and sharing no code with the library:
/// <code>
/// [8 bytes: little-endian u64 N = header length][N bytes: UTF-8 JSON header, space-padded][data bytes]
/// header = {"name":{"dtype":"F32","shape":[..],"data_offsets":[begin,end]},...,"__metadata__":{"format":"pt"}}
/// </code>
/// Offsets are relative to the start of the data section. Tensors are laid out in the order given, back to back.
/// The header is padded with spaces (0x20) so that the data section starts at an 8-byte aligned offset, as the
/// reference Rust implementation does.
/// </summary>
public static class NaiveSafetensors
{
    // ---------------------------------------------------------------- bfloat16

    /// <summary>float32 → bfloat16 bits: the upper 16 bits of the float32, rounded to nearest, ties to even.
    /// NaN stays a (quiet) NaN.</summary>
    public static ushort ToBf16Bits(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
            return (ushort)((bits >> 16) | 0x0040); // keep sign/payload top, force quiet bit
        uint upper = bits >> 16;
        uint lower = bits & 0xFFFF;
        bool roundUp = lower > 0x8000 || (lower == 0x8000 && (upper & 1) == 1);
        if (roundUp)
            upper += 1; // may carry into the exponent (correct: rounds up to the next binade / infinity)
        return (ushort)upper;
    }

    /// <summary>bfloat16 bits → float32 (exact).</summary>
    public static float FromBf16Bits(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>The float32 value a bfloat16 store/load round trip yields.</summary>
    public static float RoundToBf16(float value) => FromBf16Bits(ToBf16Bits(value));

    /// <summary>Element-wise <see cref="RoundToBf16(float)"/> into a new array.</summary>
    public static float[] RoundToBf16(float[] values)
    {
        var result = new float[values.Length];
        for (int i = 0; i < values.Length; i++)
            result[i] = RoundToBf16(values[i]);
        return result;
    }

    public static string DTypeName(NaiveDType dtype) => dtype switch
    {
        NaiveDType.F32 => "F32",
        NaiveDType.BF16 => "BF16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    public static int ElementSize(NaiveDType dtype) => dtype switch
    {
        NaiveDType.F32 => 4,
        NaiveDType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    // ---------------------------------------------------------------- writing

    /// <summary>
    /// The complete file bytes for <paramref name="tensors"/> (in the given order). <paramref name="metadata"/>
    /// defaults to {"format":"pt"}; pass an empty dictionary to omit "__metadata__".
    /// </summary>
    public static byte[] Serialize(IEnumerable<NaiveTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        metadata ??= new Dictionary<string, string> { ["format"] = "pt" };

        var names = new HashSet<string>();
        var header = new StringBuilder();
        header.Append('{');
        long offset = 0;
        bool first = true;
        foreach (var t in list)
        {
            if (!names.Add(t.Name))
                throw new ArgumentException($"duplicate tensor name '{t.Name}'");
            if (t.ElementCount != t.Values.Length)
                throw new ArgumentException($"tensor '{t.Name}': shape [{string.Join(",", t.Shape)}] needs {t.ElementCount} values, got {t.Values.Length}");
            long size = t.ElementCount * ElementSize(t.DType);
            if (!first) header.Append(',');
            first = false;
            header.Append(JsonString(t.Name));
            header.Append(":{\"dtype\":\"").Append(DTypeName(t.DType)).Append("\",\"shape\":[");
            header.Append(string.Join(",", t.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture))));
            header.Append("],\"data_offsets\":[");
            header.Append(offset.ToString(CultureInfo.InvariantCulture)).Append(',');
            header.Append((offset + size).ToString(CultureInfo.InvariantCulture)).Append("]}");
            offset += size;
        }
        if (metadata.Count > 0)
        {
            if (!first) header.Append(',');
            header.Append("\"__metadata__\":{");
            header.Append(string.Join(",", metadata.Select(kv => JsonString(kv.Key) + ":" + JsonString(kv.Value))));
            header.Append('}');
        }
        header.Append('}');

        byte[] headerBytes = Encoding.UTF8.GetBytes(header.ToString());
        int padded = headerBytes.Length;
        while ((8 + padded) % 8 != 0) padded++;

        var bytes = new byte[8 + padded + offset];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(0, 8), (ulong)padded);
        headerBytes.CopyTo(bytes, 8);
        for (int i = 8 + headerBytes.Length; i < 8 + padded; i++)
            bytes[i] = (byte)' ';

        long pos = 8 + padded;
        foreach (var t in list)
        {
            foreach (float v in t.Values)
            {
                if (t.DType == NaiveDType.F32)
                {
                    BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)pos, 4), v);
                    pos += 4;
                }
                else
                {
                    BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan((int)pos, 2), ToBf16Bits(v));
                    pos += 2;
                }
            }
        }
        return bytes;
    }

    public static void Write(string path, IEnumerable<NaiveTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
        => File.WriteAllBytes(path, Serialize(tensors, metadata));

    private static string JsonString(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    // ---------------------------------------------------------------- reading

    /// <summary>
    /// Reads every tensor of an F32/BF16 safetensors file (values widened to float32, exact for BF16).
    /// Throws for any other dtype. Returned in header order is not guaranteed; keyed by name.
    /// </summary>
    public static Dictionary<string, NaiveTensor> Read(string path) => Parse(File.ReadAllBytes(path), out _);

    /// <summary>Parses file bytes; also returns "__metadata__" (empty if absent).</summary>
    public static Dictionary<string, NaiveTensor> Parse(byte[] bytes, out Dictionary<string, string> metadata)
    {
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(0, 8));
        string json = Encoding.UTF8.GetString(bytes, 8, checked((int)n));
        long dataStart = 8 + (long)n;
        metadata = new Dictionary<string, string>();
        var result = new Dictionary<string, NaiveTensor>();
        using var doc = JsonDocument.Parse(json);
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                foreach (var m in prop.Value.EnumerateObject())
                    metadata[m.Name] = m.Value.GetString() ?? "";
                continue;
            }
            string dtypeName = prop.Value.GetProperty("dtype").GetString()!;
            NaiveDType dtype = dtypeName switch
            {
                "F32" => NaiveDType.F32,
                "BF16" => NaiveDType.BF16,
                _ => throw new NotSupportedException($"naive reader: dtype {dtypeName} of '{prop.Name}' not supported"),
            };
            int[] shape = prop.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            long[] offsets = prop.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            long count = shape.Aggregate(1L, (a, d) => a * d);
            int size = ElementSize(dtype);
            if (offsets[1] - offsets[0] != count * size)
                throw new InvalidDataException($"tensor '{prop.Name}': offsets [{offsets[0]},{offsets[1]}] do not match shape");
            var values = new float[count];
            for (long i = 0; i < count; i++)
            {
                int at = checked((int)(dataStart + offsets[0] + i * size));
                values[i] = dtype == NaiveDType.F32
                    ? BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(at, 4))
                    : FromBf16Bits(BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(at, 2)));
            }
            result[prop.Name] = new NaiveTensor(prop.Name, dtype, shape, values);
        }
        return result;
    }
}
