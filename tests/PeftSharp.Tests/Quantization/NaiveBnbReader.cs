using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// An independent reader for a single-file transformers/bitsandbytes 4-bit checkpoint, from the format alone:
/// safetensors (8-byte header length, JSON header, data) with F32 / BF16 / U8 tensors, and for each 4-bit weight
/// K the tensors K (packed U8), K.absmax, K.quant_map, [K.nested_absmax, K.nested_quant_map] and
/// K.quant_state.bitsandbytes__nf4|fp4 (the quant state's JSON as bytes).
/// </summary>
internal static class NaiveBnbReader
{
    public sealed record RawTensor(string DType, int[] Shape, byte[] Data)
    {
        public float[] Floats() => DType switch
        {
            "F32" => Enumerable.Range(0, Data.Length / 4).Select(i => BinaryPrimitives.ReadSingleLittleEndian(Data.AsSpan(4 * i))).ToArray(),
            "BF16" => Enumerable.Range(0, Data.Length / 2).Select(i => BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(Data.AsSpan(2 * i)) << 16)).ToArray(),
            _ => throw new InvalidDataException($"not a float tensor: {DType}"),
        };
    }

    public static Dictionary<string, RawTensor> Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        using var header = JsonDocument.Parse(bytes.AsMemory(8, (int)n));
        var result = new Dictionary<string, RawTensor>();
        foreach (var p in header.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") continue;
            var offsets = p.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var data = bytes.AsSpan((int)(8 + n + offsets[0]), (int)(offsets[1] - offsets[0])).ToArray();
            result[p.Name] = new RawTensor(p.Value.GetProperty("dtype").GetString()!,
                p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray(), data);
        }
        return result;
    }

    /// <summary>A 4-bit weight as stored: its quant-state JSON text and the dequantized [out, in] values (code[q]·absmax).</summary>
    public sealed record Weight(string StateJson, JsonElement State, byte[] Packed, float[] Absmax, float[] Values);

    public static Weight Dequantize(Dictionary<string, RawTensor> file, string key)
    {
        var stateKey = file.Keys.Single(k => k.StartsWith(key + ".quant_state.bitsandbytes__"));
        string json = Encoding.UTF8.GetString(file[stateKey].Data);
        var state = JsonDocument.Parse(json).RootElement;
        int blockSize = state.GetProperty("blocksize").GetInt32();
        int count = state.GetProperty("shape").EnumerateArray().Aggregate(1, (a, e) => a * e.GetInt32());
        var code = file[key + ".quant_map"].Floats();
        float[] absmax;
        if (state.TryGetProperty("nested_offset", out var offset))
        {
            // absmax = nested_quant_map[q] · nested_absmax[block of 256] + offset
            var q = file[key + ".absmax"].Data;
            var map = file[key + ".nested_quant_map"].Floats();
            var absmax2 = file[key + ".nested_absmax"].Floats();
            int nestedBlock = state.GetProperty("nested_blocksize").GetInt32();
            float off = (float)offset.GetDouble();
            absmax = q.Select((c, i) => map[c] * absmax2[i / nestedBlock] + off).ToArray();
        }
        else absmax = file[key + ".absmax"].Floats();
        var packed = file[key].Data;
        return new Weight(json, state, packed, absmax, NaiveFourBit.Dequantize(packed, absmax, code, blockSize, count));
    }
}
