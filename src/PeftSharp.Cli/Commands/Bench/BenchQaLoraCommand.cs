using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Quantization;
using PeftSharp.Quantization.Gptq;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.QaLora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench qa-lora</c>: what merging into a quantized model costs, three ways, on one randomly initialised
/// model with adapters of the same relative size (‖ΔW‖_F = ratio·‖W‖_F over the adapted layers): a QLoRA adapter on an
/// NF4 base merged and re-quantized to NF4, a QA-LoRA adapter on an INT-n base folded into float zero points, and the
/// same fold rounded to integer zero points. Reported: max and mean |Δ logit| against each unmerged model on a probe batch.
/// </summary>
public static class BenchQaLoraCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "config.json of the model to build with random weights", DefaultValueFactory = _ => Path.Combine("bench", "configs", "llama-tiny-qalora.json") };
        var bits = new Option<int>("--bits") { Description = "QA-LoRA: bits of the base (2, 3, 4 or 8)", DefaultValueFactory = _ => 4 };
        var groupSize = new Option<int>("--group-size") { Description = "QA-LoRA: quantization and pooling group size", DefaultValueFactory = _ => 32 };
        var r = new Option<int>("--r") { DefaultValueFactory = _ => 16 };
        var ratio = new Option<double>("--delta-ratio") { Description = "adapter size: ‖ΔW‖_F / ‖W‖_F over the adapted layers", DefaultValueFactory = _ => 0.1 };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var json = CliOptions.Json();
        var command = new Command("qa-lora", "merge error: QLoRA (NF4 re-quantized) vs QA-LoRA (float zero points) vs QA-LoRA (integer zero points)") { config, bits, groupSize, r, ratio, seed, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(config)!, parse.GetValue(bits), parse.GetValue(groupSize), parse.GetValue(r), parse.GetValue(ratio), parse.GetValue(seed), parse.GetValue(json))));
        return command;
    }

    static int Run(string configPath, int bits, int groupSize, int r, double ratio, long seed, bool json)
    {
        GptqConfig.CheckBits(bits, "--bits");
        if (!File.Exists(configPath) && !Directory.Exists(configPath)) throw new PeftSharpException($"--config {configPath}: not found");
        var modelConfig = ModelConfig.FromJson(File.ReadAllText(Directory.Exists(configPath) ? Path.Combine(configPath, "config.json") : configPath));
        if (modelConfig.Hidden % groupSize != 0 || modelConfig.Inner % groupSize != 0)
            throw new PeftSharpException($"--group-size: {groupSize} does not divide the model's hidden size {modelConfig.Hidden} and intermediate size {modelConfig.Inner}");
        using var probe = new LogitProbe(modelConfig, seed: seed);
        LoraConfig Lora(bool qa) => new()
        {
            R = r, LoraAlpha = 2 * r, TargetModules = TargetModules.AllLinear, InitLoraWeights = InitLoraWeights.False,
            UseQalora = qa, QaloraGroupSize = groupSize, QaloraBits = bits,
        };

        // QLoRA: NF4 base (block 64), LoRA, merge re-quantized to NF4.
        (double Max, double Mean) qlora;
        using (var model = QuantizedModelLoader.CreateRandom(modelConfig, ScalarType.Float32, CPU, null, seed))
        {
            var bnb = new BitsAndBytesConfig();
            QuantizedModels.Quantize(model, bnb);
            var lora = LoraModel.Create(model, Lora(qa: false), seed: seed + 1);
            Resize(lora, ratio);
            using var unmerged = probe.Logits(model);
            QuantizedMerge.MergeAndUnload(lora, bnb);
            using var merged = probe.Logits(model);
            qlora = LogitProbe.Difference(merged, unmerged);
        }

        // QA-LoRA: INT-n base in groups, pooled LoRA, folded into the zero points.
        (double Max, double Mean) exact, rounded;
        (long Rounded, long Clamped, double MaxShift) zeros;
        int layers;
        using (var model = QuantizedModelLoader.CreateRandom(modelConfig, ScalarType.Float32, CPU, null, seed))
        {
            var lora = LoraModel.Create(model, Lora(qa: true), seed: seed + 1);
            Resize(lora, ratio);
            using var unmerged = probe.Logits(model);
            layers = QaLoraMerge.MergeIntoZeros(lora);
            using (var folded = probe.Logits(model)) exact = LogitProbe.Difference(folded, unmerged);
            zeros = QaLoraMerge.RoundZeros(model);
            using var integer = probe.Logits(model);
            rounded = LogitProbe.Difference(integer, unmerged);
        }

        Console.WriteLine($"{modelConfig.ModelType} hidden {modelConfig.Hidden}, {layers} adapted layers, r = {r}, ‖ΔW‖/‖W‖ = {ratio}; |Δ logit| merged vs unmerged on a 2x32 probe:");
        Console.WriteLine($"| merge | max | mean |");
        Console.WriteLine($"|---|---|---|");
        Console.WriteLine($"| QLoRA, NF4 re-quantized | {qlora.Max:G3} | {qlora.Mean:G3} |");
        Console.WriteLine($"| QA-LoRA INT{bits} g{groupSize}, float zero points | {exact.Max:G3} | {exact.Mean:G3} |");
        Console.WriteLine($"| QA-LoRA INT{bits} g{groupSize}, integer zero points (v1) | {rounded.Max:G3} | {rounded.Mean:G3} |");
        Console.WriteLine($"integer zero points: {zeros.Rounded} rounded, {zeros.Clamped} clamped into 1..{1 << bits}, largest shift {zeros.MaxShift:G3}");
        if (json)
            JsonOutput.Write(new
            {
                bits, group_size = groupSize, r, delta_ratio = ratio, layers,
                qlora_max = qlora.Max, qlora_mean = qlora.Mean, float_zeros_max = exact.Max, float_zeros_mean = exact.Mean,
                integer_zeros_max = rounded.Max, integer_zeros_mean = rounded.Mean, zeros_clamped = zeros.Clamped,
            });
        return 0;
    }

    /// <summary>Scales every lora_B so that ‖ΔW‖_F = ratio·‖W‖_F summed over the adapted layers.</summary>
    static void Resize(LoraModel lora, double ratio)
    {
        using var _ = no_grad();
        double delta2 = 0, weight2 = 0;
        foreach (var layer in lora.LinearLayers.Values)
        {
            using var scope = NewDisposeScope();
            delta2 += Math.Pow(linalg.norm(layer.DeltaWeight("default")).item<float>(), 2);
            weight2 += Math.Pow(linalg.norm(layer.Host.WeightOutIn.to_type(ScalarType.Float32)).item<float>(), 2);
        }
        double factor = ratio * Math.Sqrt(weight2 / delta2);
        foreach (var layer in lora.LinearLayers.Values) layer.B("default").weight.mul_(factor);
    }
}
