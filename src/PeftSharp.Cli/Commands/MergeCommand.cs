using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Quantization;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp merge</c>: folds adapters into the base weights and writes a plain Hugging Face model folder with
/// the input's tensor names, layouts and dtypes (merging itself runs in float32).
/// </summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapters = ModelSession.AdapterOption();
        adapters.Required = true;
        var outDir = new Option<string>("--out") { Description = "new folder for the merged model", Required = true };
        var safe = new Option<bool>("--safe") { Description = "refuse to merge if the result would hold NaN or infinite values" };
        var quantizeOutput = new Option<bool>("--quantize-output")
        {
            Description = "write the merged model 4-bit (bitsandbytes format; a 4-bit model keeps its settings, others get nf4 + double quantization) and report the rounding",
        };
        var rank = ModelSession.RankOption();
        var json = CliOptions.Json();
        var command = new Command("merge", "merge adapters into the base model and write a Hugging Face model folder") { model, adapters, outDir, safe, quantizeOutput, rank, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapters)!, parse.GetValue(outDir)!, parse.GetValue(safe), parse.GetValue(quantizeOutput), parse.GetValue(rank), parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string[] adapterDirs, string outDir, bool safe, bool quantizeOutput, int? rank, bool json)
    {
        if (adapterDirs.Length == 0) throw new PeftSharpException("--adapter: give at least one adapter folder to merge");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        var stored = BitsAndBytesConfig.FromModelConfig(ModelConfig.Load(modelDir));
        if (stored is not null || quantizeOutput)
        {
            if (rank is not null) throw new PeftSharpException("--rank is not supported together with a 4-bit merge");
            return RunQuantized(modelDir, adapterDirs, outDir, safe, quantizeOutput ? stored ?? new BitsAndBytesConfig { DoubleQuant = true } : null, json);
        }
        using var session = ModelSession.Load(modelDir, adapterDirs, ScalarType.Float32, CPU, rank);
        var merged = session.MergeAndUnload(safe);
        ModelSaver.SaveLike(merged, modelDir, outDir);
        Console.WriteLine($"merged {adapterDirs.Length} adapter(s) into {outDir}");
        if (json) JsonOutput.Write(new { out_dir = outDir, adapters = adapterDirs.Length });
        return 0;
    }

    /// <summary>A 4-bit base (or 4-bit output): merged exactly in float32, written full precision or re-quantized, rounding reported.</summary>
    static int RunQuantized(string modelDir, string[] adapterDirs, string outDir, bool safe, BitsAndBytesConfig? requantize, bool json)
    {
        using var session = ModelSession.Load(modelDir, adapterDirs, ScalarType.Float32, CPU);
        if (session.Peft!.Tuners.FirstOrDefault(t => t is not Tuners.Lora.LoraModel) is { } other)
            throw new PeftSharpException($"--adapter: {other.Tuner.Name} adapters cannot be merged into a 4-bit model or written 4-bit (only LoRA adapters can)");
        var rounding = QuantizedMerge.MergeAndUnload(session.Lora!, requantize, safe);
        QuantizedCheckpoint.Save(session.Model, modelDir, outDir, requantize);
        Console.WriteLine($"merged {adapterDirs.Length} adapter(s) into {outDir} ({(requantize is null ? "full precision" : requantize.Options.ToString())})");
        Console.WriteLine($"rounding against the exact float32 merge, {rounding}");
        if (json)
            JsonOutput.Write(new
            {
                out_dir = outDir, adapters = adapterDirs.Length, quantized = requantize is not null, rounded_layers = rounding.Layers,
                max_abs_error = rounding.MaxAbs, relative_frobenius_error = rounding.RelativeFrobenius,
                error_relative_to_delta = double.IsNaN(rounding.RelativeToDelta) ? (double?)null : rounding.RelativeToDelta,
            });
        return 0;
    }
}
