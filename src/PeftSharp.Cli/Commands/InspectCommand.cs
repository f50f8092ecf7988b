using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using Spectre.Console;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp inspect</c>: parameter counts, as PEFT prints them, for a model and adapters. Built on the meta
/// device from config.json and adapter_config.json alone, so 7B-class configs cost no memory.
/// </summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        model.Description = "model folder (config.json is enough)";
        var adapters = ModelSession.AdapterOption();
        adapters.Description = "adapter folder (adapter_config.json is enough); repeat for several";
        var json = CliOptions.Json();
        var command = new Command("inspect", "count parameters of a model and its adapters (PEFT's trainable-parameters line)") { model, adapters, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapters)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string[] adapterDirs, bool json)
    {
        var config = ModelConfig.Load(modelDir);
        using var model = ModelLoader.CreateMeta(config);
        // A 4-bit folder is counted as PEFT counts its Params4bit weights (numel of the packed bytes × 2).
        var quantization = Quantization.BitsAndBytesConfig.FromModelConfig(config);
        int quantized = quantization is null ? 0 : Quantization.QuantizedModels.QuantizeMeta(model, quantization);
        long trainable = 0, all = model.parameters().Sum(Quantization.QuantizedModels.PeftParameterCount);
        var rows = new List<(string Name, AdapterSummary Summary)>();
        if (adapterDirs.Length > 0)
        {
            // As get_peft_model then load_adapter: the first adapter is active and trainable, the others loaded frozen.
            var (names, dirs) = ModelSession.ParseAdapters(adapterDirs);
            var peft = new PeftModel(model);
            for (int i = 0; i < adapterDirs.Length; i++)
            {
                var adapterConfig = TunerRegistry.ForFolder(dirs[i]).LoadConfig(dirs[i]);
                peft.AddAdapter(names[i], adapterConfig, trainable: i == 0);
            }
            peft.SetAdapter(names[0]);
            (trainable, all) = peft.CountParameters();
            foreach (var name in names) rows.Add((name, peft.TunerOf(name).Summary(name)));
        }
        var err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        err.MarkupLine($"[bold]{Markup.Escape(config.ModelType!)}[/]: {config.Layers} layers, hidden {config.Hidden}, heads {config.Heads}/{config.KeyValueHeads}, vocab {config.VocabSize}");
        if (quantization is not null)
            err.MarkupLine($"4-bit: {quantized} linear layers ({Markup.Escape(quantization.Options.ToString())}), weights {Quantization.QuantizedModels.WeightBytes(model) / 1048576.0:F1} MiB");
        if (rows.Count > 0)
        {
            var table = new Table().AddColumns("adapter", "method", "r", "layers", "parameters");
            foreach (var (name, r) in rows) table.AddRow(name, r.Method, r.Size, r.Layers.ToString(), r.Parameters.ToString("N0"));
            err.Write(table);
        }
        Console.WriteLine(PeftModel.FormatReport(trainable, all));
        if (json) JsonOutput.Write(new { trainable_params = trainable, all_params = all, trainable_percent = 100.0 * trainable / all });
        return 0;
    }
}
