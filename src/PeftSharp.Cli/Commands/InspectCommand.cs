using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
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
        var rows = new List<(string Name, string Method, string Rank, int Layers, long Params)>();
        var tuners = adapterDirs.Select(Tuners.TunerRegistry.ForFolder).ToList();
        if (tuners.Any(t => t.PeftType != PeftTypes.Lora))
        {
            // Other registered methods (bottleneck adapters, ...) through PeftModel; the first adapter counts as trainable.
            var names = ModelSession.AdapterNames(adapterDirs);
            var peft = new Tuners.PeftModel(model);
            for (int i = 0; i < adapterDirs.Length; i++) peft.AddAdapter(names[i], tuners[i].LoadConfig(adapterDirs[i]), trainable: i == 0);
            peft.SetAdapter(names[0]);
            (trainable, all) = peft.CountParameters();
            foreach (var name in names)
            {
                var summary = peft.TunerOf(name).Summary(name);
                rows.Add((name, summary.Method, summary.Size, summary.Layers, summary.Parameters));
            }
        }
        else if (adapterDirs.Length > 0)
        {
            var names = ModelSession.AdapterNames(adapterDirs);
            LoraModel? lora = null;
            for (int i = 0; i < adapterDirs.Length; i++)
            {
                var lc = LoraConfig.Load(adapterDirs[i]);
                if (lora is null) lora = LoraModel.Create(model, lc, names[i]);
                else lora.AddAdapter(names[i], lc, trainable: false);
            }
            (trainable, all) = lora!.CountParameters();
            foreach (var name in names)
            {
                var c = lora.Configs[name];
                int layers = lora.LinearLayers.Values.Count(l => l.Adapters.ContainsKey(name)) + lora.EmbeddingLayers.Values.Count(l => l.Adapters.ContainsKey(name));
                long count = lora.AdapterParameters().Where(p => p.Adapter == name).Sum(p => p.Param.numel());
                rows.Add((name, c.UseDora ? "dora" : "lora", c.R.ToString(), layers, count));
            }
        }
        var err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        err.MarkupLine($"[bold]{Markup.Escape(config.ModelType!)}[/]: {config.Layers} layers, hidden {config.Hidden}, heads {config.Heads}/{config.KeyValueHeads}, vocab {config.VocabSize}");
        if (quantization is not null)
            err.MarkupLine($"4-bit: {quantized} linear layers ({Markup.Escape(quantization.Options.ToString())}), weights {Quantization.QuantizedModels.WeightBytes(model) / 1048576.0:F1} MiB");
        if (rows.Count > 0)
        {
            var table = new Table().AddColumns("adapter", "method", "r", "layers", "parameters");
            foreach (var r in rows) table.AddRow(r.Name, r.Method, r.Rank, r.Layers.ToString(), r.Params.ToString("N0"));
            err.Write(table);
        }
        Console.WriteLine(LoraModel.FormatReport(trainable, all));
        if (json) JsonOutput.Write(new { trainable_params = trainable, all_params = all, trainable_percent = 100.0 * trainable / all });
        return 0;
    }
}
