using System.CommandLine;
using PeftSharp.Composition;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp merge-models</c>: fully fine-tuned checkpoints of one base merged into one Hugging Face model folder
/// (task arithmetic, TIES, DARE), with mergekit's semantics and defaults.
/// </summary>
public static class MergeModelsCommand
{
    public static Command Create()
    {
        var baseModel = new Option<string>("--base") { Description = "the base model folder the others were fine-tuned from", Required = true };
        var models = new Option<string[]>("--model")
        {
            Description = "a fine-tuned model folder (safetensors, the base's tensor names and shapes); repeat for each",
            Required = true,
            AllowMultipleArgumentsPerToken = false,
        };
        var weights = new Option<string>("--weights") { Description = "one weight per --model, comma-separated (default: 1 each)" };
        var method = new Option<string>("--method") { Description = $"merge method: {string.Join(", ", CheckpointMerging.Methods)}", DefaultValueFactory = _ => "ties" };
        var density = new Option<double>("--density") { Description = "fraction of each task vector kept, in (0, 1] (ties, dare_*)", DefaultValueFactory = _ => 1.0 };
        var normalize = new Option<bool?>("--normalize") { Description = "divide by the weights that contributed (default: true for ties, false otherwise, as mergekit)" };
        var rescale = new Option<bool?>("--rescale") { Description = "divide DARE's survivors by the density (default: true for dare_*, as mergekit)" };
        var seed = new Option<long?>("--seed") { Description = "seed for DARE's random masks" };
        var outDir = new Option<string>("--out") { Description = "new folder for the merged model", Required = true };
        var json = CliOptions.Json();
        var command = new Command("merge-models", "merge fine-tuned checkpoints of one base (task arithmetic, TIES, DARE, as mergekit)")
            { baseModel, models, weights, method, density, normalize, rescale, seed, outDir, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(baseModel)!, parse.GetValue(models)!, parse.GetValue(weights),
            parse.GetValue(method)!, parse.GetValue(density), parse.GetValue(normalize), parse.GetValue(rescale), parse.GetValue(seed),
            parse.GetValue(outDir)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string baseDir, string[] modelDirs, string? weightsText, string method, double density, bool? normalize, bool? rescale,
                   long? seed, string outDir, bool json)
    {
        var weights = weightsText is null ? Enumerable.Repeat(1.0, modelDirs.Length).ToList() : CombineCommand.ParseWeights(weightsText);
        if (weights.Count != modelDirs.Length)
            throw new PeftSharpException($"--weights: {weights.Count} weight(s) for {modelDirs.Length} --model folder(s); give one per model");
        if (!CheckpointMerging.Methods.Contains(method))
            throw new PeftSharpException($"--method: expected one of {string.Join(", ", CheckpointMerging.Methods)}, got \"{method}\"");
        if (density is not (> 0 and <= 1)) throw new PeftSharpException($"--density: expected a value in (0, 1], got {density}");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        var options = new CheckpointMerging.Options(method, weights, density, normalize, rescale, seed);
        var summary = CheckpointMerging.MergeFolders(baseDir, modelDirs, options, outDir);
        Console.Error.WriteLine($"merged {modelDirs.Length} model(s) into {outDir} ({method}): {summary.MergedTensors} tensors merged, {summary.CopiedTensors} copied");
        if (json) JsonOutput.Write(new { out_dir = outDir, method, models = modelDirs.Length, merged_tensors = summary.MergedTensors, copied_tensors = summary.CopiedTensors, parameters = summary.Parameters });
        return 0;
    }
}
