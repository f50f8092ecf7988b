using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// 4-bit loading settings, as transformers' <c>BitsAndBytesConfig</c> and the <c>quantization_config</c> object it
/// writes into config.json (<c>quant_method: "bitsandbytes"</c>). Only 4-bit loading is supported.
/// </summary>
public sealed record BitsAndBytesConfig
{
    /// <summary>bnb_4bit_quant_type. transformers defaults to fp4; QLoRA (and PeftSharp) to nf4.</summary>
    public FourBitType QuantType { get; init; } = FourBitType.Nf4;
    /// <summary>bnb_4bit_use_double_quant.</summary>
    public bool DoubleQuant { get; init; }
    /// <summary>bnb_4bit_compute_dtype: the dtype 4-bit layers dequantize to and multiply in.</summary>
    public ScalarType ComputeDType { get; init; } = ScalarType.Float32;
    /// <summary>Values per absmax block when quantizing (not part of transformers' config: it is always 64 there;
    /// a quantized checkpoint records each layer's block size in its quant state).</summary>
    public int BlockSize { get; init; } = 64;
    /// <summary>llm_int8_skip_modules: module names kept in full precision; null means transformers' default (the output head).</summary>
    public IReadOnlyList<string>? SkipModules { get; init; }

    /// <summary>The 4-bit settings (quant type, block size, double quantization), validated.</summary>
    public FourBitOptions Options => new FourBitOptions(QuantType, BlockSize, DoubleQuant).Validated();

    /// <summary>Module names never quantized: llm_int8_skip_modules, or lm_head (transformers keeps the output embedding in full precision).</summary>
    public IReadOnlyList<string> ModulesNotConverted => SkipModules ?? ["lm_head"];

    /// <summary>Whether a module path is kept in full precision (a path segment, or a dotted suffix, equals a skipped name).</summary>
    public bool Skips(string modulePath) =>
        ModulesNotConverted.Any(name => modulePath == name || modulePath.EndsWith("." + name, StringComparison.Ordinal) ||
                                        modulePath.Split('.').Contains(name));

    /// <summary>The quantization_config object transformers writes for this config (keys as BitsAndBytesConfig.to_dict).</summary>
    public JsonObject ToJson() => new()
    {
        ["_load_in_4bit"] = true,
        ["_load_in_8bit"] = false,
        ["bnb_4bit_compute_dtype"] = ModelLoader.DTypeName(ComputeDType),
        ["bnb_4bit_quant_storage"] = "uint8",
        ["bnb_4bit_quant_type"] = QuantMaps.Name(QuantType),
        ["bnb_4bit_use_double_quant"] = DoubleQuant,
        ["llm_int8_enable_fp32_cpu_offload"] = false,
        ["llm_int8_has_fp16_weight"] = false,
        ["llm_int8_skip_modules"] = SkipModules is null ? null : new JsonArray(SkipModules.Select(s => (JsonNode)s).ToArray()),
        ["llm_int8_threshold"] = 6.0,
        ["load_in_4bit"] = true,
        ["load_in_8bit"] = false,
        ["quant_method"] = "bitsandbytes",
    };

    /// <summary>The config.json's quantization_config, or null when the folder is not quantized (or GPTQ-quantized).</summary>
    public static BitsAndBytesConfig? FromModelConfig(ModelConfig config)
    {
        if (config.Extra is null || !config.Extra.TryGetValue("quantization_config", out var q) || q.ValueKind == JsonValueKind.Null) return null;
        if (q.ValueKind == JsonValueKind.Object && q.TryGetProperty("quant_method", out var m) && m.ValueKind == JsonValueKind.String && m.GetString() == "gptq")
            return null; // GPTQ folders: Gptq.GptqModelLoader
        return FromJson(q, config.SourcePath ?? "config.json");
    }

    /// <summary>Reads a <c>quantization_config</c> object; <paramref name="where"/> names the file in errors.</summary>
    /// <exception cref="PeftSharpException">Not bitsandbytes 4-bit, or an invalid field.</exception>
    public static BitsAndBytesConfig FromJson(JsonElement q, string where)
    {
        where += ": quantization_config";
        if (q.ValueKind != JsonValueKind.Object) throw new PeftSharpException($"{where}: expected an object");
        string method = Str(q, "quant_method") ?? "bitsandbytes";
        if (method != "bitsandbytes")
            throw new PeftSharpException($"{where}: quant_method \"{method}\" is not supported (PeftSharp reads bitsandbytes 4-bit checkpoints)");
        bool in4 = Bool(q, "load_in_4bit") ?? Bool(q, "_load_in_4bit") ?? false;
        bool in8 = Bool(q, "load_in_8bit") ?? Bool(q, "_load_in_8bit") ?? false;
        if (!in4)
            throw new PeftSharpException($"{where}: {(in8 ? "8-bit (load_in_8bit)" : "this")} bitsandbytes quantization is not supported; only load_in_4bit");
        string storage = Str(q, "bnb_4bit_quant_storage") ?? "uint8";
        if (storage != "uint8")
            throw new PeftSharpException($"{where}: bnb_4bit_quant_storage \"{storage}\" is not supported (expected uint8)");
        var skip = q.TryGetProperty("llm_int8_skip_modules", out var s) && s.ValueKind == JsonValueKind.Array
            ? s.EnumerateArray().Select(e => e.GetString() ?? "").ToArray()
            : null;
        return new BitsAndBytesConfig
        {
            QuantType = QuantMaps.Parse(Str(q, "bnb_4bit_quant_type") ?? "fp4", where + ".bnb_4bit_quant_type"),
            DoubleQuant = Bool(q, "bnb_4bit_use_double_quant") ?? false,
            ComputeDType = ParseComputeDType(Str(q, "bnb_4bit_compute_dtype") ?? "float32", where + ".bnb_4bit_compute_dtype"),
            SkipModules = skip,
        };
    }

    /// <summary>bfloat16 or float32 (float16, common in published configs, computes in float32 on the CPU).</summary>
    public static ScalarType ParseComputeDType(string name, string what = "--compute-dtype") => name.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "torch.float32" => ScalarType.Float32,
        "bfloat16" or "bf16" or "torch.bfloat16" => ScalarType.BFloat16,
        "float16" or "fp16" or "torch.float16" => ScalarType.Float16,
        _ => throw new PeftSharpException($"{what}: expected bfloat16 or float32, got \"{name}\""),
    };

    static string? Str(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    static bool? Bool(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;
}
