using System.CommandLine;
using PeftSharp.Composition;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Hyperformer;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp hyperformer-export</c>: writes the bottleneck adapter a Hyperformer generates for one task as an
/// ordinary AdapterHub (Houlsby) adapter folder, loadable with <c>--adapter</c> without the hypernetwork.
/// </summary>
public static class HyperformerExportCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapter = new Option<string>("--adapter") { Description = "the Hyperformer adapter folder (peft_type HYPERFORMER)", Required = true };
        var task = new Option<int>("--task") { Description = "the task id whose adapter to write", Required = true };
        var outDir = new Option<string>("--out") { Description = "new folder for the AdapterHub adapter", Required = true };
        var json = CliOptions.Json();
        var command = new Command("hyperformer-export", "write the adapter a Hyperformer generates for one task as an AdapterHub bottleneck adapter") { model, adapter, task, outDir, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapter)!, parse.GetValue(task), parse.GetValue(outDir)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string adapterDir, int task, string outDir, bool json)
    {
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        if (!Directory.Exists(adapterDir)) throw new PeftSharpException($"--adapter {adapterDir}: folder not found");
        if (PeftConfig.ReadPeftType(adapterDir) is var type && type != HyperformerConfig.Type)
            throw new PeftSharpException($"--adapter {adapterDir}: peft_type is {type}; expected a {HyperformerConfig.Type} adapter");
        using var model = ModelLoader.Load(modelDir, ScalarType.Float32, CPU);
        var hyper = HyperformerModel.Attach(model);
        hyper.LoadAdapter(adapterDir, "default");
        AtomicDirectory.CreateNew(outDir, temp => HyperformerExport.Export(hyper, "default", task, temp, $"task_{task}"));
        Console.Error.WriteLine($"wrote the task {task} adapter of {adapterDir} to {outDir} (AdapterHub Houlsby, reduction factor {hyper.Config("default").ReductionFactor})");
        if (json) JsonOutput.Write(new { adapter = adapterDir, task, out_dir = outDir });
        return 0;
    }
}
