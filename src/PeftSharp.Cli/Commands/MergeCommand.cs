using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Quantization.Gptq;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.QaLora;
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
        var integerZeros = new Option<bool>("--integer-zeros")
        {
            Description = "QA-LoRA: write a standard GPTQ v1 folder (zero points rounded to integers) and report the rounding; default: exact float32 zero points (PeftSharp's extension)",
        };
        var rank = ModelSession.RankOption();
        var json = CliOptions.Json();
        var command = new Command("merge", "merge adapters into the base model and write a Hugging Face model folder (QA-LoRA adapters: a GPTQ folder)") { model, adapters, outDir, safe, quantizeOutput, integerZeros, rank, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapters)!, parse.GetValue(outDir)!, parse.GetValue(safe), parse.GetValue(quantizeOutput), parse.GetValue(integerZeros), parse.GetValue(rank), parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string[] adapterDirs, string outDir, bool safe, bool quantizeOutput, bool integerZeros, int? rank, bool json)
    {
        if (adapterDirs.Length == 0) throw new PeftSharpException("--adapter: give at least one adapter folder to merge");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        var modelConfig = ModelConfig.Load(modelDir);
        var dirs = ModelSession.ParseAdapters(adapterDirs).Dirs;
        bool qalora = dirs.Any(IsQaLora);
        if (qalora || GptqConfig.FromModelConfig(modelConfig) is not null)
        {
            if (!dirs.All(IsQaLora))
                throw new PeftSharpException(qalora ? "--adapter: QA-LoRA adapters can only be merged together with other QA-LoRA adapters"
                                                    : $"--model {modelDir}: a GPTQ base can only be merged with QA-LoRA adapters (use_qalora)");
            if (quantizeOutput || rank is not null || safe) throw new PeftSharpException("--quantize-output, --rank and --safe do not apply to a QA-LoRA merge");
            return RunQaLora(modelDir, adapterDirs, outDir, integerZeros, json);
        }
        if (integerZeros) throw new PeftSharpException("--integer-zeros: only for QA-LoRA adapters (use_qalora)");
        var stored = BitsAndBytesConfig.FromModelConfig(modelConfig);
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

    /// <summary>A PEFT LoRA folder with use_qalora; other folders (AdapterHub's configs have no peft_type) are not.</summary>
    static bool IsQaLora(string dir)
    {
        if (!File.Exists(Path.Combine(dir, Peft.PeftConfig.ConfigFileName))) return false;
        try { if (Peft.PeftConfig.ReadPeftType(dir) != Peft.PeftTypes.Lora) return false; }
        catch (PeftSharpException) { return false; } // not a PEFT config: the ordinary merge path names what is wrong
        return LoraConfig.Load(dir).UseQalora;
    }

    /// <summary>
    /// QA-LoRA: the adapters fold into the zero points of the group-quantized base and a GPTQ folder is written, with
    /// float32 zero points (exact) or, with --integer-zeros, rounded ones (standard v1); the logit differences on a
    /// probe batch are reported.
    /// </summary>
    static int RunQaLora(string modelDir, string[] adapterDirs, string outDir, bool integerZeros, bool json)
    {
        using var session = ModelSession.Load(modelDir, adapterDirs, ScalarType.Float32, CPU);
        if (session.Peft!.Tuners.FirstOrDefault(t => t is not LoraModel) is { } other)
            throw new PeftSharpException($"--adapter: {other.Tuner.Name} adapters cannot be merged into a QA-LoRA GPTQ folder");
        var model = session.Model;
        using var probe = new LogitProbe(model.Config);
        using var unmerged = probe.Logits(model);
        int layers = QaLoraMerge.MergeIntoZeros(session.Lora!);
        using var exact = probe.Logits(model);
        var fold = LogitProbe.Difference(exact, unmerged);
        var first = GptqLayers.Quantized(model).First().Weight;
        var source = GptqConfig.FromModelConfig(model.Config);
        var config = new GptqConfig
        {
            Bits = first.Bits,
            GroupSize = source?.GroupSize ?? (int)first.GroupSize,
            DescAct = source?.DescAct ?? false,
            Sym = false,
            CheckpointFormat = integerZeros ? "gptq" : "gptq_v2",
            FloatZeros = !integerZeros,
        };
        (double Max, double Mean)? rounding = null;
        (long Rounded, long Clamped, double MaxShift) zeros = default;
        if (integerZeros)
        {
            zeros = QaLoraMerge.RoundZeros(model);
            using var rounded = probe.Logits(model);
            rounding = LogitProbe.Difference(rounded, unmerged);
        }
        GptqCheckpoint.Save(model, modelDir, outDir, config);
        Console.WriteLine($"merged {adapterDirs.Length} QA-LoRA adapter(s) into the zero points of {layers} layers; wrote a {config.Bits}-bit GPTQ folder {outDir} " +
                          (integerZeros ? "(v1, integer zero points)" : "(float32 zero points: PeftSharp's extension, peftsharp_float_zeros)"));
        Console.WriteLine($"logits against the unmerged QA-LoRA model on a 2x32 probe: exact fold max |Δ| = {fold.Max:G4}, mean |Δ| = {fold.Mean:G4}");
        if (rounding is { } r)
            Console.WriteLine($"integer zero points ({zeros.Rounded} rounded, {zeros.Clamped} clamped into 1..{1 << config.Bits}, largest shift {zeros.MaxShift:G4}): " +
                              $"max |Δ logit| = {r.Max:G4}, mean |Δ logit| = {r.Mean:G4}");
        if (json)
            JsonOutput.Write(new
            {
                out_dir = outDir, adapters = adapterDirs.Length, layers, bits = config.Bits, group_size = config.GroupSize, integer_zeros = integerZeros,
                fold_max_abs_logit_diff = fold.Max, fold_mean_abs_logit_diff = fold.Mean,
                rounding_max_abs_logit_diff = rounding?.Max, rounding_mean_abs_logit_diff = rounding?.Mean,
                zeros_rounded = integerZeros ? zeros.Rounded : (long?)null, zeros_clamped = integerZeros ? zeros.Clamped : (long?)null,
            });
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
