using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Quantization;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>
/// The 4-bit loading flags shared by eval and generate (and train): <c>--load-in-4bit [--quant-type nf4|fp4]
/// [--double-quant] [--blocksize N] [--compute-dtype bfloat16|float32]</c>. A folder saved quantized is loaded in
/// 4 bits without any flag; then only <c>--compute-dtype</c> applies.
/// </summary>
public sealed class QuantizationOptions
{
    public Option<bool> LoadIn4Bit { get; } = new("--load-in-4bit")
    {
        Description = "hold the linear layers of the decoder blocks in 4 bits (QLoRA; quantized while loading, layer by layer)",
    };
    public Option<string?> QuantType { get; } = new("--quant-type") { Description = "4-bit data type: nf4 (default) or fp4" };
    public Option<bool> DoubleQuant { get; } = new("--double-quant") { Description = "also quantize the absmax constants (8-bit, blocks of 256): 4.127 instead of 4.5 bits per weight" };
    public Option<int?> BlockSize { get; } = new Option<int?>("--blocksize") { Description = "weights per absmax block: 32, 64 (default), 128, ... 4096" }.InRange(32, 4096);
    public Option<string?> ComputeDType { get; } = new("--compute-dtype")
    {
        Description = "dtype 4-bit layers dequantize to and multiply in: bfloat16 or float32 (default: the folder's, else --dtype)",
    };

    public IEnumerable<Option> All => [LoadIn4Bit, QuantType, DoubleQuant, BlockSize, ComputeDType];

    public void AddTo(Command command)
    {
        foreach (var option in All) command.Add(option);
    }

    /// <summary>
    /// The config to load with, or null to load as the folder is (full precision, or its own 4-bit format).
    /// <paramref name="dtype"/> is the dtype of the other tensors, the default compute dtype.
    /// </summary>
    public BitsAndBytesConfig? Parse(ParseResult parse, string modelDir, ScalarType dtype)
    {
        bool load = parse.GetValue(LoadIn4Bit);
        string? type = parse.GetValue(QuantType), compute = parse.GetValue(ComputeDType);
        bool dq = parse.GetValue(DoubleQuant);
        int? blockSize = parse.GetValue(BlockSize);
        var stored = BitsAndBytesConfig.FromModelConfig(ModelConfig.Load(modelDir));
        if (!load && (type is not null || dq || blockSize is not null))
            throw new PeftSharpException($"{(type is not null ? "--quant-type" : dq ? "--double-quant" : "--blocksize")}: only applies with --load-in-4bit");
        if (!load && compute is not null && stored is null)
            throw new PeftSharpException("--compute-dtype: only applies to 4-bit layers; add --load-in-4bit (or use a quantized model folder)");
        if (stored is not null && (type is not null || dq || blockSize is not null))
            Console.Error.WriteLine($"note: {modelDir} is already quantized ({stored.Options}); --quant-type/--double-quant/--blocksize are ignored");
        if (!load && compute is null) return null;
        var computeDType = compute is not null ? BitsAndBytesConfig.ParseComputeDType(compute) : stored?.ComputeDType ?? dtype;
        return new BitsAndBytesConfig
        {
            QuantType = type is null ? FourBitType.Nf4 : QuantMaps.Parse(type),
            DoubleQuant = dq,
            BlockSize = blockSize ?? 64,
            ComputeDType = computeDType,
        }.Checked();
    }
}

internal static class BitsAndBytesConfigChecks
{
    public static BitsAndBytesConfig Checked(this BitsAndBytesConfig config)
    {
        _ = config.Options; // validates the block size
        if (config.ComputeDType == ScalarType.Float16)
            throw new PeftSharpException("--compute-dtype: float16 is very slow on the CPU; use bfloat16 or float32");
        return config;
    }
}
