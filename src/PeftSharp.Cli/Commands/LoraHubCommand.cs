using System.CommandLine;
using System.Text.Json;
using PeftSharp.Composition;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp lorahub</c>: composes LoRA modules for a new task from a few examples, without gradients
/// (LoraHub), and writes the composition as one PEFT LoRA folder.
/// </summary>
public static class LoraHubCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapters = ModelSession.AdapterOption();
        adapters.Description = "a LoRA module trained on another task (all of one r and lora_alpha); repeat for each";
        adapters.Required = true;
        var data = new Option<string>("--data") { Description = "a few examples of the new task (JSONL as train reads it, or plain text)", Required = true };
        var budget = new Option<int>("--budget") { Description = "number of loss evaluations for the search", DefaultValueFactory = _ => 40 };
        var l1 = new Option<double>("--l1") { Description = "L1 penalty on the weights, α·mean|wᵢ|", DefaultValueFactory = _ => 0.05 };
        var bound = new Option<double>("--bound") { Description = "each weight is searched in [-bound, bound]", DefaultValueFactory = _ => 1.5 };
        var seed = new Option<long>("--seed") { Description = "seed of the search", DefaultValueFactory = _ => 0 };
        var maxLength = new Option<int>("--max-length") { Description = "tokens per example (longer ones are cut)", DefaultValueFactory = _ => 512 };
        var batchSize = new Option<int>("--batch-size") { Description = "examples per forward pass", DefaultValueFactory = _ => 8 };
        var dtype = CliOptions.DType();
        var outDir = new Option<string>("--out") { Description = "new folder for the composed adapter", Required = true };
        var json = CliOptions.Json();
        var command = new Command("lorahub", "compose LoRA modules for a new task from a few examples (LoraHub: gradient-free weight search)")
            { model, adapters, data, budget, l1, bound, seed, maxLength, batchSize, dtype, outDir, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapters)!, parse.GetValue(data)!,
            parse.GetValue(budget), parse.GetValue(l1), parse.GetValue(bound), parse.GetValue(seed), parse.GetValue(maxLength),
            parse.GetValue(batchSize), parse.GetValue(dtype)!, parse.GetValue(outDir)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string[] adapterDirs, string dataPath, int budget, double l1, double bound, long seed, int maxLength,
                   int batchSize, string dtypeName, string outDir, bool json)
    {
        if (budget < 1) throw new PeftSharpException($"--budget: expected a whole number ≥ 1, got {budget}");
        if (!(l1 >= 0)) throw new PeftSharpException($"--l1: expected a value ≥ 0, got {l1}");
        if (!(bound > 0)) throw new PeftSharpException($"--bound: expected a value > 0, got {bound}");
        if (maxLength < 2) throw new PeftSharpException($"--max-length: expected a whole number ≥ 2, got {maxLength}");
        if (batchSize < 1) throw new PeftSharpException($"--batch-size: expected a whole number ≥ 1, got {batchSize}");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        foreach (var dir in adapterDirs)
            if (PeftConfig.ReadPeftType(dir) is var t && t != PeftTypes.Lora)
                throw new PeftSharpException($"--adapter {dir}: LoraHub composes LoRA modules (peft_type LORA), this one is {t}");
        if (!File.Exists(dataPath)) throw new PeftSharpException($"--data {dataPath}: file not found");

        var tokenizer = ModelTokenizer.Load(modelDir);
        var examples = DataFiles.Load(dataPath, tokenizer, maxLength).Examples;
        if (examples.Count == 0) throw new PeftSharpException($"--data {dataPath}: no examples");
        using var model = ModelLoader.Load(modelDir, CliOptions.ParseDType(dtypeName), CPU);
        var names = adapterDirs.Select((_, i) => $"module_{i}").ToList();
        var lora = AdapterFiles.Load(model, adapterDirs[0], names[0]);
        for (int i = 1; i < adapterDirs.Length; i++) AdapterFiles.LoadAdapter(lora, adapterDirs[i], names[i]);
        LoraHub.AddComposed(lora, names, AdapterFiles.DefaultAdapter);

        long pad = tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;
        double Loss() => ValidationLoss.Mean(model, examples, pad, batchSize);
        double baseLoss;
        using (lora.DisableAdapters()) baseLoss = Loss();
        Console.Error.WriteLine($"LoraHub: {adapterDirs.Length} modules, {examples.Count} examples, base loss {baseLoss:F4}, budget {budget}");
        var result = LoraHub.Search(lora, names, AdapterFiles.DefaultAdapter, Loss,
            new LoraHub.Options { Budget = budget, L1 = l1, Bound = bound, Seed = seed },
            (i, value, best) => Console.Error.WriteLine($"  evaluation {i + 1}/{budget}: objective {value:F4} (best {best:F4})"));

        AtomicDirectory.CreateNew(outDir, temp =>
        {
            AdapterFiles.Save(lora, temp);
            var record = new
            {
                modules = adapterDirs.Select(Path.GetFullPath).ToArray(), weights = result.Weights, loss = result.Loss, objective = result.Objective,
                base_loss = baseLoss, evaluations = result.Evaluations, l1, bound, seed,
            };
            File.WriteAllText(Path.Combine(temp, "lorahub.json"), JsonSerializer.Serialize(record, new JsonSerializerOptions { WriteIndented = true }) + "\n");
        });
        Console.WriteLine($"weights: {string.Join(", ", result.Weights.Select(w => w.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)))}");
        Console.WriteLine($"loss on the examples: base {baseLoss:F4} → composed {result.Loss:F4}; written to {outDir}");
        if (json) JsonOutput.Write(new { out_dir = outDir, weights = result.Weights, loss = result.Loss, base_loss = baseLoss, objective = result.Objective, evaluations = result.Evaluations });
        return 0;
    }
}
