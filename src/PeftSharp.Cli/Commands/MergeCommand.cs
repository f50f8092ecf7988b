using System.CommandLine;
using PeftSharp.Models;
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
        var rank = ModelSession.RankOption();
        var json = CliOptions.Json();
        var command = new Command("merge", "merge adapters into the base model and write a Hugging Face model folder") { model, adapters, outDir, safe, rank, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapters)!, parse.GetValue(outDir)!, parse.GetValue(safe), parse.GetValue(rank), parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string[] adapterDirs, string outDir, bool safe, int? rank, bool json)
    {
        if (adapterDirs.Length == 0) throw new PeftSharpException("--adapter: give at least one adapter folder to merge");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        using var session = ModelSession.Load(modelDir, adapterDirs, ScalarType.Float32, CPU, rank);
        var merged = session.MergeAndUnload(safe);
        ModelSaver.SaveLike(merged, modelDir, outDir);
        Console.WriteLine($"merged {adapterDirs.Length} adapter(s) into {outDir}");
        if (json) JsonOutput.Write(new { out_dir = outDir, adapters = adapterDirs.Length });
        return 0;
    }
}
