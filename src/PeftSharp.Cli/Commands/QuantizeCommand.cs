using System.CommandLine;
using System.Diagnostics;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp quantize</c>: writes a model folder with its decoder-block linear layers in 4 bits, in the format
/// transformers/bitsandbytes save (packed uint8 weights plus quant-state tensors, <c>quantization_config</c> in
/// config.json), so the folder loads 4-bit in PeftSharp (<c>--model</c>) and in transformers alike.
/// </summary>
public static class QuantizeCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var outDir = new Option<string>("--out") { Description = "new folder for the quantized model", Required = true };
        var quantType = new Option<string>("--quant-type") { Description = "nf4 or fp4", DefaultValueFactory = _ => "nf4" };
        var doubleQuant = new Option<bool>("--double-quant") { Description = "also quantize the absmax constants (4.127 instead of 4.5 bits per weight)" };
        var blockSize = new Option<int>("--blocksize") { Description = "weights per absmax block: 32, 64, 128, ... 4096", DefaultValueFactory = _ => 64 }.InRange(32, 4096);
        var computeDType = new Option<string>("--compute-dtype") { Description = "bnb_4bit_compute_dtype recorded in config.json: float32 or bfloat16", DefaultValueFactory = _ => "float32" };
        var json = CliOptions.Json();
        var command = new Command("quantize", "write a 4-bit (bitsandbytes format) copy of a model folder") { model, outDir, quantType, doubleQuant, blockSize, computeDType, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(outDir)!, new BitsAndBytesConfig
        {
            QuantType = QuantMaps.Parse(parse.GetValue(quantType)!),
            DoubleQuant = parse.GetValue(doubleQuant),
            BlockSize = parse.GetValue(blockSize),
            ComputeDType = BitsAndBytesConfig.ParseComputeDType(parse.GetValue(computeDType)!),
        }.Checked(), parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string outDir, BitsAndBytesConfig config, bool json)
    {
        var modelConfig = ModelConfig.Load(modelDir);
        if (BitsAndBytesConfig.FromModelConfig(modelConfig) is not null)
            throw new PeftSharpException($"--model {modelDir}: already quantized (config.json has a bitsandbytes quantization_config)");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        var clock = Stopwatch.StartNew();
        // Full-precision tensors are held in float32 and written back in their stored dtype (no rounding).
        using var model = QuantizedModelLoader.Load(modelDir, ScalarType.Float32, CPU, config);
        var layers = QuantizedModels.Quantized(model).ToList();
        double quantizeSeconds = clock.Elapsed.TotalSeconds;
        QuantizedCheckpoint.Save(model, modelDir, outDir, config);
        long before = WeightFileBytes(modelDir), after = WeightFileBytes(outDir);
        long weights = layers.Sum(l => l.Layer.QuantState!.Count);
        double bits = layers.Sum(l => l.Layer.QuantState!.StorageBytes) * 8.0 / weights;
        Console.WriteLine($"quantized {layers.Count} linear layers ({weights:N0} weights) to {config.Options}: {bits:F3} bits per weight");
        Console.WriteLine($"checkpoint {before / 1048576.0:F1} MiB -> {after / 1048576.0:F1} MiB in {clock.Elapsed.TotalSeconds:F1} s; wrote {outDir}");
        if (json)
            JsonOutput.Write(new
            {
                out_dir = outDir, layers = layers.Count, quantized_weights = weights, bits_per_weight = bits,
                bytes_before = before, bytes_after = after, quantize_seconds = quantizeSeconds, seconds = clock.Elapsed.TotalSeconds,
            });
        return 0;
    }

    static long WeightFileBytes(string dir) =>
        Directory.EnumerateFiles(dir, "*.safetensors").Sum(f => new FileInfo(f).Length);
}
