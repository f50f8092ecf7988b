using System.Text;
using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// How transformers/bitsandbytes serialize a 4-bit linear layer (Linear4bit._save_to_state_dict with
/// QuantState.as_dict(packed=True)). For the weight key <c>K</c> ("...q_proj.weight"):
/// <list type="bullet">
/// <item><c>K</c>: packed codes, uint8 [(n+1)/2, 1];</item>
/// <item><c>K.absmax</c>: float32 [blocks], or uint8 [blocks] with double quantization;</item>
/// <item><c>K.quant_map</c>: float32 [16], the code table;</item>
/// <item>with double quantization <c>K.nested_absmax</c> float32 [ceil(blocks/256)] and <c>K.nested_quant_map</c> float32 [256];</item>
/// <item><c>K.quant_state.bitsandbytes__nf4</c> (or <c>__fp4</c>): the UTF-8 bytes (uint8 [len]) of
/// <c>json.dumps</c> of {quant_type, blocksize, dtype, shape[, nested_blocksize, nested_dtype, nested_offset]}.</item>
/// </list>
/// </summary>
public static class Bnb4BitFormat
{
    static readonly string[] TensorSuffixes = [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"];
    const string StatePrefix = ".quant_state.bitsandbytes__";

    /// <summary>The checkpoint entries of one quantized weight, by key.</summary>
    public static List<KeyValuePair<string, Tensor>> ToTensors(string weightKey, Tensor packed, FourBitQuantState state)
    {
        var entries = new List<KeyValuePair<string, Tensor>>
        {
            new(weightKey, packed),
            new(weightKey + ".absmax", state.Absmax),
            new(weightKey + ".quant_map", state.Code),
        };
        if (state.Nested is { } nested)
        {
            entries.Add(new(weightKey + ".nested_absmax", nested.Absmax));
            entries.Add(new(weightKey + ".nested_quant_map", nested.Code));
        }
        var json = Encoding.UTF8.GetBytes(StateJson(state));
        entries.Add(new(weightKey + StatePrefix + QuantMaps.Name(state.Type), tensor(json, ScalarType.Byte)));
        return entries;
    }

    /// <summary>The quant state's non-tensor items as bitsandbytes' pack_dict_to_tensor writes them (json.dumps, insertion order).</summary>
    public static string StateJson(FourBitQuantState state)
    {
        var sb = new StringBuilder();
        sb.Append($"{{\"quant_type\": \"{QuantMaps.Name(state.Type)}\", \"blocksize\": {state.BlockSize}, ");
        sb.Append($"\"dtype\": \"{ModelLoader.DTypeName(state.DType)}\", \"shape\": [{string.Join(", ", state.Shape)}]");
        if (state.Nested is { } nested)
            sb.Append($", \"nested_blocksize\": {nested.BlockSize}, \"nested_dtype\": \"float32\", \"nested_offset\": {PythonJson.FloatRepr(nested.Offset)}");
        sb.Append('}');
        return sb.ToString();
    }

    /// <summary>Whether the checkpoint holds <paramref name="weightKey"/> as a bitsandbytes 4-bit weight.</summary>
    public static bool IsQuantized(SafetensorsCheckpoint checkpoint, string weightKey) => StateKey(checkpoint, weightKey) is not null;

    static string? StateKey(SafetensorsCheckpoint checkpoint, string weightKey)
    {
        foreach (var type in new[] { "nf4", "fp4" })
            if (checkpoint.Tensors.ContainsKey(weightKey + StatePrefix + type)) return weightKey + StatePrefix + type;
        return null;
    }

    /// <summary>If <paramref name="key"/> is one of the quant-state entries of a weight, that weight's key.</summary>
    public static string? WeightKeyOfStateEntry(string key)
    {
        int state = key.IndexOf(StatePrefix, StringComparison.Ordinal);
        if (state > 0) return key[..state];
        foreach (var suffix in TensorSuffixes)
            if (key.EndsWith(suffix, StringComparison.Ordinal)) return key[..^suffix.Length];
        return null;
    }

    /// <summary>Reads one quantized weight (packed codes and quant state) onto a device, checking what it can.</summary>
    public static Quantized4BitWeight Read(SafetensorsCheckpoint checkpoint, string weightKey, Device device)
    {
        string file = checkpoint.FilePathOf(weightKey);
        string stateKey = StateKey(checkpoint, weightKey) ?? throw new PeftSharpException($"{file}: tensor '{weightKey}' has no quant_state.bitsandbytes__nf4/fp4 entry");
        using var jsonBytes = checkpoint.Read(stateKey);
        if (jsonBytes.dtype != ScalarType.Byte) throw new PeftSharpException($"{file}: tensor '{stateKey}' must be U8 (the quant state's JSON bytes)");
        string json = Encoding.UTF8.GetString(jsonBytes.data<byte>().ToArray());
        JsonElement root;
        try { root = JsonDocument.Parse(json).RootElement; }
        catch (JsonException e) { throw new PeftSharpException($"{file}: tensor '{stateKey}' is not valid JSON ({e.Message.Split('\n')[0]})"); }

        string Err(string what) => $"{file}: '{stateKey}': {what}";
        var type = QuantMaps.Parse(root.TryGetProperty("quant_type", out var qt) ? qt.GetString() ?? "" : "", Err("quant_type"));
        if (!stateKey.EndsWith(QuantMaps.Name(type), StringComparison.Ordinal)) throw new PeftSharpException(Err($"quant_type \"{QuantMaps.Name(type)}\" does not match the key"));
        int blockSize = root.TryGetProperty("blocksize", out var bs) && bs.TryGetInt32(out int b) ? b : throw new PeftSharpException(Err("missing blocksize"));
        Blockwise.CheckFourBitBlockSize(blockSize, Err("blocksize"));
        var dtype = root.TryGetProperty("dtype", out var dt) ? DTypeOf(dt.GetString(), Err("dtype")) : ScalarType.Float32;
        long[] shape = root.TryGetProperty("shape", out var sh) && sh.ValueKind == JsonValueKind.Array
            ? sh.EnumerateArray().Select(e => e.GetInt64()).ToArray()
            : throw new PeftSharpException(Err("missing shape"));

        Tensor ReadAs(string suffix, ScalarType expected)
        {
            string key = weightKey + suffix;
            if (!checkpoint.Tensors.TryGetValue(key, out var info)) throw new PeftSharpException($"{file}: missing tensor '{key}'");
            if (info.ScalarType != expected) throw new PeftSharpException($"{checkpoint.FilePathOf(key)}: tensor '{key}' has dtype {info.DType}, expected {expected}");
            return checkpoint.Read(key, device);
        }

        var packed = ReadAs("", ScalarType.Byte);
        long n = shape.Aggregate(1L, (x, y) => x * y);
        if (packed.numel() != (n + 1) / 2)
            throw new PeftSharpException($"{file}: tensor '{weightKey}' holds {packed.numel()} bytes, expected {(n + 1) / 2} for quant-state shape [{string.Join(", ", shape)}]");
        bool nested = root.TryGetProperty("nested_offset", out var off);
        var absmax = ReadAs(".absmax", nested ? ScalarType.Byte : ScalarType.Float32);
        var code = ReadAs(".quant_map", ScalarType.Float32);
        if (code.numel() != 16) throw new PeftSharpException($"{file}: tensor '{weightKey}.quant_map' has {code.numel()} values, expected 16");
        NestedAbsmax? nestedAbsmax = null;
        if (nested)
        {
            int nestedBlock = root.TryGetProperty("nested_blocksize", out var nb) && nb.TryGetInt32(out int v) ? v : FourBitOptions.NestedBlockSize;
            var nestedCode = ReadAs(".nested_quant_map", ScalarType.Float32);
            if (nestedCode.numel() != 256) throw new PeftSharpException($"{file}: tensor '{weightKey}.nested_quant_map' has {nestedCode.numel()} values, expected 256");
            nestedAbsmax = new NestedAbsmax(ReadAs(".nested_absmax", ScalarType.Float32), nestedCode, (float)off.GetDouble(), nestedBlock);
            long blocks = (n + blockSize - 1) / blockSize, expected = (blocks + nestedBlock - 1) / nestedBlock;
            if (nestedAbsmax.Absmax.numel() != expected)
                throw new PeftSharpException($"{file}: tensor '{weightKey}.nested_absmax' has {nestedAbsmax.Absmax.numel()} values, expected {expected}");
        }
        FourBitQuantState state;
        try { state = new FourBitQuantState(type, blockSize, shape, dtype, code, absmax, nestedAbsmax); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{file}: '{weightKey}': {e.Message}"); }
        return new Quantized4BitWeight(packed, state);
    }

    static ScalarType DTypeOf(string? name, string what) => name switch
    {
        "float32" => ScalarType.Float32,
        "bfloat16" => ScalarType.BFloat16,
        "float16" => ScalarType.Float16,
        _ => throw new PeftSharpException($"{what}: unsupported dtype \"{name}\""),
    };
}
