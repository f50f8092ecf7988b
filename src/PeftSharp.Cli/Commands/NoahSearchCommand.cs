using System.CommandLine;
using System.Text.Json;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Noah;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp noah-search</c>: NOAH's evolutionary search over a trained supernet's sub-networks under a trainable
/// parameter budget, fitness = loss on validation data; writes the chosen sub-network as ordinary adapters
/// (lora/, bottleneck/, prefix/) and noah_search.json.
/// </summary>
public static class NoahSearchCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapter = new Option<string>("--adapter") { Description = "the NOAH supernet folder (train --method noah)", Required = true };
        var data = new Option<string>("--data") { Description = "validation data (JSONL as train reads it, or plain text)", Required = true };
        var budget = new Option<long>("--budget") { Description = "most trainable parameters the chosen sub-network may have", Required = true }.AtLeast(0);
        var population = new Option<int>("--population") { Description = "sub-networks per generation", DefaultValueFactory = _ => 10 }.AtLeast(2);
        var generations = new Option<int>("--generations") { Description = "generations after the random first one", DefaultValueFactory = _ => 5 }.AtLeast(0);
        var mutation = new Option<double>("--mutation-prob") { Description = "probability that a mutation redraws each size", DefaultValueFactory = _ => 0.3 }.InRange(0, 1);
        var seed = new Option<int>("--seed") { Description = "seed of the search", DefaultValueFactory = _ => 0 }.AtLeast(0);
        var maxLength = new Option<int>("--max-length") { Description = "tokens per example (longer ones are cut)", DefaultValueFactory = _ => 512 }.AtLeast(2);
        var batchSize = new Option<int>("--batch-size") { Description = "examples per forward pass", DefaultValueFactory = _ => 8 }.AtLeast(1);
        var dtype = CliOptions.DType();
        var outDir = new Option<string>("--out") { Description = "new folder for the chosen sub-network's adapters", Required = true };
        var json = CliOptions.Json();
        var command = new Command("noah-search", "NOAH: evolutionary search of a supernet's sub-networks under a parameter budget; exports the best as ordinary adapters")
            { model, adapter, data, budget, population, generations, mutation, seed, maxLength, batchSize, dtype, outDir, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapter)!, parse.GetValue(data)!, parse.GetValue(budget),
            new SearchOptions { Population = parse.GetValue(population), Generations = parse.GetValue(generations), MutationProbability = parse.GetValue(mutation), Seed = parse.GetValue(seed) },
            parse.GetValue(maxLength), parse.GetValue(batchSize), parse.GetValue(dtype)!, parse.GetValue(outDir)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string adapterDir, string dataPath, long budget, SearchOptions options, int maxLength, int batchSize,
                   string dtypeName, string outDir, bool json)
    {
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        if (PeftConfig.ReadPeftType(adapterDir) is var t && t != NoahConfig.PeftTypeName)
            throw new PeftSharpException($"--adapter {adapterDir}: expected a NOAH supernet (peft_type NOAH), this one is {t}");
        if (!File.Exists(dataPath)) throw new PeftSharpException($"--data {dataPath}: file not found");

        var tokenizer = ModelTokenizer.Load(modelDir);
        var examples = DataFiles.Load(dataPath, tokenizer, maxLength).Examples;
        if (examples.Count == 0) throw new PeftSharpException($"--data {dataPath}: no examples");
        using var model = ModelLoader.Load(modelDir, CliOptions.ParseDType(dtypeName), CPU);
        var peft = PeftModel.Load(model, [adapterDir]);
        var noah = peft.Get<NoahModel>()!;
        long pad = tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;
        double Loss(SubNet s)
        {
            noah.SetSubNet(s);
            return ValidationLoss.Mean(model, examples, pad, batchSize);
        }
        double baseLoss;
        using (peft.DisableAdapters()) baseLoss = ValidationLoss.Mean(model, examples, pad, batchSize);
        Console.Error.WriteLine($"NOAH search: {examples.Count} validation examples, base loss {baseLoss:F4}, budget {budget} parameters, population {options.Population}, {options.Generations} generations, seed {options.Seed}");
        var result = EvolutionarySearch.Run(noah.Config!, noah.ParameterCount, budget, Loss, options,
            (i, s, loss) => Console.Error.WriteLine($"  evaluation {i}: {s} ({noah.ParameterCount(s)} parameters) loss {loss:F4}"));
        noah.SetSubNet(result.Best);

        IReadOnlyList<string> folders = [];
        AtomicDirectory.CreateNew(outDir, temp =>
        {
            folders = NoahExport.Write(noah, result.Best, temp, modelDir).Select(f => Path.GetFileName(f)).ToList();
            var record = new
            {
                supernet = Path.GetFullPath(adapterDir), lora_rank = result.Best.Rank, adapter_dim = result.Best.AdapterDim, prompt_length = result.Best.PromptLength,
                parameters = result.Parameters, budget, loss = result.Fitness, base_loss = baseLoss, evaluations = result.Evaluations,
                history = result.History, population = options.Population, generations = options.Generations, mutation_prob = options.MutationProbability, seed = options.Seed,
                folders,
            };
            File.WriteAllText(Path.Combine(temp, "noah_search.json"), JsonSerializer.Serialize(record, new JsonSerializerOptions { WriteIndented = true }) + "\n");
        });
        Console.WriteLine($"chosen: {result.Best} ({result.Parameters} parameters ≤ {budget}); validation loss base {baseLoss:F4} → {result.Fitness:F4}; " +
                          $"{result.Evaluations} sub-networks evaluated; written to {outDir} ({(folders.Count == 0 ? "no adapter: the base model won" : string.Join(", ", folders))})");
        if (json)
            JsonOutput.Write(new
            {
                out_dir = outDir, lora_rank = result.Best.Rank, adapter_dim = result.Best.AdapterDim, prompt_length = result.Best.PromptLength,
                parameters = result.Parameters, loss = result.Fitness, base_loss = baseLoss, evaluations = result.Evaluations, history = result.History, folders,
            });
        return 0;
    }
}
