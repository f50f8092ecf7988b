using System.CommandLine;
using System.Globalization;
using PeftSharp.Composition;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp combine</c>: PEFT's <c>add_weighted_adapter</c> from the command line — several LoRA adapters of one
/// base combined into one new PEFT LoRA folder (linear, cat, svd, TIES, DARE, magnitude pruning and their _svd forms).
/// </summary>
public static class CombineCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapters = ModelSession.AdapterOption();
        adapters.Description = "PEFT LoRA adapter folder to combine; repeat for each";
        adapters.Required = true;
        var weights = new Option<string>("--weights") { Description = "one weight per --adapter, comma-separated (negative weights subtract), e.g. 0.7,0.5", Required = true };
        var type = new Option<string>("--combination-type")
        {
            Description = $"how to combine: {string.Join(", ", WeightedAdapters.CombinationTypes)}",
            DefaultValueFactory = _ => "svd",
        };
        var density = new Option<double?>("--density") { Description = "fraction of entries kept, in (0, 1], for ties, dare_*, magnitude_prune and their _svd forms" };
        var sign = new Option<string>("--majority-sign-method") { Description = "TIES' sign election: total or frequency", DefaultValueFactory = _ => "total" };
        var svdRank = new Option<int?>("--svd-rank") { Description = "rank of the result for the _svd types (default: the largest source rank)" };
        var svdClamp = new Option<double?>("--svd-clamp") { Description = "clamp the SVD factors at this quantile of their entries, in (0, 1]" };
        var seed = new Option<long?>("--seed") { Description = "seed for DARE's random masks (default: a fresh one each run)" };
        var outDir = new Option<string>("--out") { Description = "new folder for the combined adapter", Required = true };
        var json = CliOptions.Json();
        var command = new Command("combine", "combine LoRA adapters into one (PEFT's add_weighted_adapter)")
            { model, adapters, weights, type, density, sign, svdRank, svdClamp, seed, outDir, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapters)!, parse.GetValue(weights)!,
            parse.GetValue(type)!, parse.GetValue(density), parse.GetValue(sign)!, parse.GetValue(svdRank), parse.GetValue(svdClamp),
            parse.GetValue(seed), parse.GetValue(outDir)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string[] adapterDirs, string weightsText, string type, double? density, string signText,
                   int? svdRank, double? svdClamp, long? seed, string outDir, bool json)
    {
        var weights = ParseWeights(weightsText);
        if (weights.Count != adapterDirs.Length)
            throw new PeftSharpException($"--weights: {weights.Count} weight(s) for {adapterDirs.Length} --adapter folder(s); give one per adapter");
        if (!WeightedAdapters.CombinationTypes.Contains(type))
            throw new PeftSharpException($"--combination-type: expected one of {string.Join(", ", WeightedAdapters.CombinationTypes)}, got \"{type}\"");
        if (density is not null && density is not (> 0 and <= 1)) throw new PeftSharpException($"--density: expected a value in (0, 1], got {density}");
        if (svdRank is < 1) throw new PeftSharpException($"--svd-rank: expected a whole number ≥ 1, got {svdRank}");
        if (svdClamp is not null && svdClamp is not (> 0 and <= 1)) throw new PeftSharpException($"--svd-clamp: expected a quantile in (0, 1], got {svdClamp}");
        var sign = signText switch
        {
            "total" => MajoritySign.Total,
            "frequency" => MajoritySign.Frequency,
            _ => throw new PeftSharpException($"--majority-sign-method: expected total or frequency, got \"{signText}\""),
        };
        foreach (var dir in adapterDirs)
            if (PeftConfig.ReadPeftType(dir) is var t && t != PeftTypes.Lora)
                throw new PeftSharpException($"--adapter {dir}: only LoRA adapters (peft_type LORA) can be combined, this one is {t}");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");

        using var model = ModelLoader.Load(modelDir, ScalarType.Float32, CPU);
        // Sources get their own names so the result can be the folder's "default" adapter.
        var names = adapterDirs.Select((_, i) => $"source_{i}").ToList();
        var lora = AdapterFiles.Load(model, adapterDirs[0], names[0]);
        for (int i = 1; i < adapterDirs.Length; i++) AdapterFiles.LoadAdapter(lora, adapterDirs[i], names[i]);
        lora.AddWeightedAdapter(names, weights, AdapterFiles.DefaultAdapter, type, svdRank, density, sign, svdClamp, seed);
        AtomicDirectory.CreateNew(outDir, tmp => AdapterFiles.Save(lora, tmp));
        var config = lora.Configs[AdapterFiles.DefaultAdapter];
        int layers = lora.LinearLayers.Values.Count(l => l.Adapters.ContainsKey(AdapterFiles.DefaultAdapter))
                   + lora.EmbeddingLayers.Values.Count(l => l.Adapters.ContainsKey(AdapterFiles.DefaultAdapter));
        Console.Error.WriteLine($"combined {adapterDirs.Length} adapter(s) ({type}) into {outDir}: r = {config.R}, {layers} layer(s)");
        if (json) JsonOutput.Write(new { out_dir = outDir, combination_type = type, r = config.R, adapters = adapterDirs.Length, layers });
        return 0;
    }

    internal static List<double> ParseWeights(string text)
    {
        var result = new List<double>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!double.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out var w) || !double.IsFinite(w))
                throw new PeftSharpException($"--weights: \"{part}\" is not a number (expected comma-separated numbers, e.g. 0.7,0.5)");
            result.Add(w);
        }
        return result;
    }
}
