using System.CommandLine;
using System.Text.Json;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.UniPelt;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp unipelt-export</c>: writes a UniPELT adapter's parts as ordinary adapters (lora/ PEFT LORA, prefix/ PEFT
/// PREFIX_TUNING, bottleneck/ LLM-Adapters BOTTLENECK), each gate replaced by a constant: its mean over --data, or 1.
/// </summary>
public static class UniPeltExportCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapter = new Option<string>("--adapter") { Description = "the UniPELT adapter folder (train --method unipelt)", Required = true };
        var data = new Option<string?>("--data") { Description = "text or JSONL whose mean gate values are folded into the parts (default: every gate taken as 1)" };
        var maxLength = new Option<int>("--max-length") { Description = "tokens per example (longer ones are cut)", DefaultValueFactory = _ => 512 }.AtLeast(2);
        var dtype = CliOptions.DType();
        var outDir = new Option<string>("--out") { Description = "new folder for lora/, prefix/ and bottleneck/", Required = true };
        var json = CliOptions.Json();
        var command = new Command("unipelt-export", "write a UniPELT adapter's LoRA, prefix and bottleneck parts as ordinary adapter folders (gates folded in as constants)")
            { model, adapter, data, maxLength, dtype, outDir, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapter)!, parse.GetValue(data), parse.GetValue(maxLength),
            parse.GetValue(dtype)!, parse.GetValue(outDir)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string adapterDir, string? dataPath, int maxLength, string dtypeName, string outDir, bool json)
    {
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
        if (PeftConfig.ReadPeftType(adapterDir) is var t && t != UniPeltConfig.PeftTypeName)
            throw new PeftSharpException($"--adapter {adapterDir}: expected a UniPELT adapter (peft_type UNIPELT), this one is {t}");
        if (dataPath is not null && !File.Exists(dataPath)) throw new PeftSharpException($"--data {dataPath}: file not found");
        using var model = ModelLoader.Load(modelDir, CliOptions.ParseDType(dtypeName), CPU);
        var peft = PeftModel.Load(model, [adapterDir]);
        var unipelt = peft.Get<UniPeltModel>()!;
        GateMeans? gates = null;
        if (dataPath is not null)
        {
            var tokenizer = ModelTokenizer.Load(modelDir);
            var examples = DataFiles.Load(dataPath, tokenizer, maxLength).Examples;
            if (examples.Count == 0) throw new PeftSharpException($"--data {dataPath}: no examples");
            long pad = tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;
            // One example per forward: no padding positions enter the means.
            gates = unipelt.MeasureGates(() => ValidationLoss.Mean(model, examples, pad, batchSize: 1));
            Console.Error.WriteLine($"mean gates over {examples.Count} examples: LoRA {gates.Lora.Values.Average():F3}, prefix {gates.Prefix.Average():F3}, adapter {gates.Adapter.Values.Average():F3}");
        }
        IReadOnlyList<string> folders = [];
        AtomicDirectory.CreateNew(outDir, temp => folders = UniPeltExport.Write(unipelt, temp, gates, modelDir).Select(f => Path.GetFileName(f)).ToList());
        Console.WriteLine($"written to {outDir}: {string.Join(", ", folders)} (gates folded in as {(gates is null ? "1" : "their means over --data")}; exact only where a gate is constant)");
        if (json)
            JsonOutput.Write(new
            {
                out_dir = outDir, folders,
                lora_gates = gates?.Lora, prefix_gates = gates?.Prefix, adapter_gates = gates?.Adapter,
            });
        return 0;
    }
}
