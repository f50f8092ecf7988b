using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace PeftSharp.Tests.Quantization.Gptq;

/// <summary>
/// Plain-loop GPTQ reference, sharing no code with the library: AutoGPTQ's packing loops (2/4/8 bits: 32/bits
/// values per word, low bits first; 3 bits: the 10 + 1 + 10 + 1 + 10 scheme over three words), the dequantization
/// W[o, i] = scales[g_idx[i], o]·(q[i, o] − z[g_idx[i], o]), and a raw safetensors writer/reader for I32/F16/F32.
/// </summary>
internal static class NaiveGptq
{
    /// <summary>values [rows, cols] packed along rows, as AutoGPTQ's QuantLinear.pack does for qweight.</summary>
    public static uint[,] PackRows(int[,] v, int bits)
    {
        int rows = v.GetLength(0), cols = v.GetLength(1);
        var q = new uint[rows / 32 * bits, cols];
        for (int c = 0; c < cols; c++)
        {
            int i = 0, row = 0;
            while (row < q.GetLength(0))
            {
                if (bits != 3)
                {
                    for (int j = i; j < i + 32 / bits; j++) q[row, c] |= (uint)v[j, c] << (bits * (j - i));
                    i += 32 / bits;
                    row++;
                }
                else
                {
                    for (int j = i; j < i + 10; j++) q[row, c] |= (uint)v[j, c] << (3 * (j - i));
                    i += 10;
                    q[row, c] |= (uint)v[i, c] << 30;
                    row++;
                    q[row, c] |= ((uint)v[i, c] >> 2) & 1;
                    i++;
                    for (int j = i; j < i + 10; j++) q[row, c] |= (uint)v[j, c] << (3 * (j - i) + 1);
                    i += 10;
                    q[row, c] |= (uint)v[i, c] << 31;
                    row++;
                    q[row, c] |= ((uint)v[i, c] >> 1) & 0x3;
                    i++;
                    for (int j = i; j < i + 10; j++) q[row, c] |= (uint)v[j, c] << (3 * (j - i) + 2);
                    i += 10;
                    row++;
                }
            }
        }
        return q;
    }

    /// <summary>values [rows, cols] packed along columns, as AutoGPTQ packs qzeros.</summary>
    public static uint[,] PackColumns(int[,] v, int bits)
    {
        var packedT = PackRows(Transpose(v), bits);
        var result = new uint[packedT.GetLength(1), packedT.GetLength(0)];
        for (int r = 0; r < packedT.GetLength(0); r++)
            for (int c = 0; c < packedT.GetLength(1); c++) result[c, r] = packedT[r, c];
        return result;
    }

    public static int[,] Transpose(int[,] v)
    {
        var t = new int[v.GetLength(1), v.GetLength(0)];
        for (int r = 0; r < v.GetLength(0); r++)
            for (int c = 0; c < v.GetLength(1); c++) t[c, r] = v[r, c];
        return t;
    }

    public static int[] Flat(int[,] v) => v.Cast<int>().ToArray();
    public static int[] Flat(uint[,] v) => v.Cast<uint>().Select(u => unchecked((int)u)).ToArray();

    /// <summary>W[o, i] = scales[g[i], o]·(q[i, o] − z[g[i], o]) as [out, in] row-major.</summary>
    public static float[] Dequantize(int[,] q, float[,] scales, float[,] zeros, int[] g)
    {
        int inF = q.GetLength(0), outF = q.GetLength(1);
        var w = new float[inF * outF];
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++)
                w[o * inF + i] = scales[g[i], o] * (q[i, o] - zeros[g[i], o]);
        return w;
    }

    public sealed record RawTensor(string DType, int[] Shape, byte[] Data);

    public static RawTensor I32(int[] values, params int[] shape)
    {
        var b = new byte[values.Length * 4];
        for (int k = 0; k < values.Length; k++) BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4 * k), values[k]);
        return new("I32", shape, b);
    }

    public static RawTensor F16(float[] values, params int[] shape)
    {
        var b = new byte[values.Length * 2];
        for (int k = 0; k < values.Length; k++) BinaryPrimitives.WriteHalfLittleEndian(b.AsSpan(2 * k), (Half)values[k]);
        return new("F16", shape, b);
    }

    public static RawTensor F32(float[] values, params int[] shape)
    {
        var b = new byte[values.Length * 4];
        for (int k = 0; k < values.Length; k++) BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(4 * k), values[k]);
        return new("F32", shape, b);
    }

    /// <summary>Writes a safetensors file: u64 header length, JSON header, data back to back.</summary>
    public static void Write(string path, IReadOnlyList<KeyValuePair<string, RawTensor>> tensors)
    {
        var header = new Dictionary<string, object>();
        long offset = 0;
        foreach (var (name, t) in tensors)
        {
            header[name] = new { dtype = t.DType, shape = t.Shape, data_offsets = new[] { offset, offset + t.Data.Length } };
            offset += t.Data.Length;
        }
        header["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" };
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        using var f = File.Create(path);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)json.Length);
        f.Write(len);
        f.Write(json);
        foreach (var (_, t) in tensors) f.Write(t.Data);
    }

    /// <summary>Reads every tensor of a safetensors file as raw bytes.</summary>
    public static Dictionary<string, RawTensor> Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, n));
        var result = new Dictionary<string, RawTensor>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") continue;
            var offsets = p.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            result[p.Name] = new(p.Value.GetProperty("dtype").GetString()!, p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                                 bytes.AsSpan(8 + n + (int)offsets[0], (int)(offsets[1] - offsets[0])).ToArray());
        }
        return result;
    }
}
