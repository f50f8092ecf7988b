using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Models;

namespace PeftSharp.Quantization.Gptq;

/// <summary>
/// The <c>quantization_config</c> of a GPTQ folder (<c>quant_method: "gptq"</c>), as transformers' GPTQConfig,
/// AutoGPTQ and GPTQModel write it: bits, group size, act-order (<c>desc_act</c>), symmetric grid and checkpoint format.
/// <c>checkpoint_format</c> "gptq" (v1) stores each zero point minus one in <c>qzeros</c>; "gptq_v2" stores it as it is.
/// <c>peftsharp_float_zeros</c> is PeftSharp's own extension: <c>qzeros</c> is then a float32 tensor [groups, out]
/// holding the zero points themselves (what an exact QA-LoRA merge needs; see docs/qa-lora.md).
/// </summary>
public sealed record GptqConfig
{
    /// <summary>The bit widths GPTQ kernels pack: 2, 3, 4 and 8.</summary>
    public static readonly IReadOnlyList<int> SupportedBits = [2, 3, 4, 8];

    /// <summary>Bits per weight (2, 3, 4 or 8).</summary>
    public int Bits { get; init; } = 4;
    /// <summary>Input columns per quantization group; -1 means one group for the whole row.</summary>
    public int GroupSize { get; init; } = 128;
    /// <summary>Act-order: columns were quantized in order of decreasing activation, so <c>g_idx</c> is not monotone.</summary>
    public bool DescAct { get; init; }
    /// <summary>Symmetric grid (zero point 2^(bits−1) everywhere); asymmetric otherwise.</summary>
    public bool Sym { get; init; } = true;
    /// <summary>"gptq" (v1: zero points stored minus one) or "gptq_v2" (stored as they are).</summary>
    public string CheckpointFormat { get; init; } = "gptq";
    /// <summary>PeftSharp's extension: <c>qzeros</c> is float32 [groups, out] holding the zero points (no packing, no offset).</summary>
    public bool FloatZeros { get; init; }

    /// <summary>True for checkpoint_format "gptq_v2" (zero points stored without the v1 offset of one).</summary>
    public bool IsV2 => CheckpointFormat == "gptq_v2";

    /// <summary>The group size for a layer with <paramref name="inFeatures"/> inputs (-1 means all of them).</summary>
    public long GroupSizeFor(long inFeatures) => GroupSize == -1 ? inFeatures : GroupSize;

    /// <summary>Throws a one-line error naming <paramref name="what"/> unless <paramref name="bits"/> is 2, 3, 4 or 8.</summary>
    public static void CheckBits(int bits, string what)
    {
        if (!SupportedBits.Contains(bits))
            throw new PeftSharpException($"{what}: {bits} bits is not supported; expected 2, 3, 4 or 8");
    }

    /// <summary>The config.json's GPTQ quantization_config, or null when the folder is not GPTQ-quantized.</summary>
    public static GptqConfig? FromModelConfig(ModelConfig config)
    {
        if (config.Extra is null || !config.Extra.TryGetValue("quantization_config", out var q) || q.ValueKind != JsonValueKind.Object) return null;
        if (!q.TryGetProperty("quant_method", out var m) || m.ValueKind != JsonValueKind.String || m.GetString() != "gptq") return null;
        return FromJson(q, config.SourcePath ?? "config.json");
    }

    /// <summary>Reads a GPTQ <c>quantization_config</c> object; <paramref name="where"/> names the file in errors.</summary>
    public static GptqConfig FromJson(JsonElement q, string where)
    {
        where += ": quantization_config";
        int bits = Int(q, "bits", where) ?? 4;
        CheckBits(bits, where + ".bits");
        int group = Int(q, "group_size", where) ?? 128;
        if (group != -1 && group <= 0) throw new PeftSharpException($"{where}.group_size: expected a positive number or -1, got {group}");
        string format = Str(q, "checkpoint_format") ?? "gptq";
        if (format is not ("gptq" or "gptq_v2"))
            throw new PeftSharpException($"{where}.checkpoint_format: \"{format}\" is not supported (expected \"gptq\" or \"gptq_v2\")");
        return new GptqConfig
        {
            Bits = bits,
            GroupSize = group,
            DescAct = Bool(q, "desc_act") ?? false,
            Sym = Bool(q, "sym") ?? true,
            CheckpointFormat = format,
            FloatZeros = Bool(q, "peftsharp_float_zeros") ?? false,
        };
    }

    /// <summary>The quantization_config object written into config.json (transformers' GPTQConfig keys).</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["bits"] = Bits,
            ["checkpoint_format"] = CheckpointFormat,
            ["damp_percent"] = 0.1,
            ["desc_act"] = DescAct,
            ["group_size"] = GroupSize,
            ["modules_in_block_to_quantize"] = null,
            ["quant_method"] = "gptq",
            ["sym"] = Sym,
            ["true_sequential"] = true,
        };
        if (FloatZeros) o["peftsharp_float_zeros"] = true;
        return o;
    }

    static int? Int(JsonElement e, string name, string where)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i)) throw new PeftSharpException($"{where}.{name}: expected an integer");
        return i;
    }

    static string? Str(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    static bool? Bool(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;
}
