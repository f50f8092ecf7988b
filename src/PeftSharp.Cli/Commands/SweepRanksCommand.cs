using System.CommandLine;
using PeftSharp.Inference;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Tuners.DyLora;
using Spectre.Console;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp sweep-ranks</c>: held-out loss at every rank of an adapter, a PNG plot, and the smallest rank within a
/// tolerance of the best. DyLoRA adapters are truncated (first b components, scaling α/b); plain LoRA adapters are
/// replaced by the best rank-b approximation (truncated SVD) of each layer's ΔW.
/// </summary>
public static class SweepRanksCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapter = new Option<string>("--adapter") { Description = "adapter folder", Required = true };
        var text = new Option<string>("--text") { Description = "held-out text file to score", Required = true };
        var tolerance = new Option<double>("--tolerance") { Description = "pick the smallest rank whose NLL is within this many nats of the best", DefaultValueFactory = _ => 0.01 }.AtLeast(0);
        var plot = new Option<string?>("--plot") { Description = "PNG file for the loss-vs-rank plot (default: rank-sweep.png beside the adapter)" };
        var context = new Option<int?>("--context") { Description = "scoring window in tokens (default: the model's context)" }.AtLeast(2);
        var dtype = CliOptions.DType();
        var json = CliOptions.Json();
        var command = new Command("sweep-ranks", "evaluate an adapter at every rank and pick the smallest good one") { model, adapter, text, tolerance, plot, context, dtype, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapter)!, parse.GetValue(text)!,
            parse.GetValue(tolerance), parse.GetValue(plot), parse.GetValue(context), parse.GetValue(dtype)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string adapterDir, string textPath, double tolerance, string? plotPath, int? context, string dtypeName, bool json)
    {
        if (!File.Exists(textPath)) throw new PeftSharpException($"--text {textPath}: file not found");
        var tokenizer = ModelTokenizer.Load(modelDir);
        var ids = tokenizer.Encode(File.ReadAllText(textPath));
        bool dylora = DyLoraConfig.IsDyLora(adapterDir);
        using var session = ModelSession.Load(modelDir, [adapterDir], CliOptions.ParseDType(dtypeName), TorchSharp.torch.CPU);
        var lora = session.Lora ?? throw new PeftSharpException($"--adapter {adapterDir}: sweep-ranks needs a LoRA adapter (peft_type \"LORA\")");
        int maxRank = lora.Configs[AdapterFiles.DefaultAdapter].R;
        double baseNll;
        using (lora.DisableAdapters()) baseNll = Scoring.MeanNll(session.Model, ids, context).MeanNll;
        var results = new List<(int Rank, double Nll)>();
        for (int rank = 1; rank <= maxRank; rank++)
        {
            Console.Error.Write($"\rrank {rank}/{maxRank}");
            if (dylora)
            {
                lora.SetRank(rank, AdapterFiles.DefaultAdapter);
                results.Add((rank, Scoring.MeanNll(session.Model, ids, context).MeanNll));
            }
            else
            {
                string name = $"svd{rank}";
                lora.AddSvdTruncated(AdapterFiles.DefaultAdapter, rank, name);
                lora.SetAdapter(name);
                results.Add((rank, Scoring.MeanNll(session.Model, ids, context).MeanNll));
                lora.SetAdapter(AdapterFiles.DefaultAdapter);
                lora.DeleteAdapter(name);
            }
        }
        Console.Error.WriteLine();
        double best = results.Min(r => r.Nll);
        int chosen = results.First(r => r.Nll <= best + tolerance).Rank;

        var table = new Table().AddColumns("rank", "nll", "perplexity", "");
        table.AddRow("base", baseNll.ToString("F4"), Math.Exp(baseNll).ToString("F3"), "");
        foreach (var (rank, nll) in results)
            table.AddRow(rank.ToString(), nll.ToString("F4"), Math.Exp(nll).ToString("F3"), rank == chosen ? "← smallest within tolerance" : "");
        AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) }).Write(table);

        plotPath ??= Path.Combine(adapterDir, "rank-sweep.png");
        var plt = new ScottPlot.Plot();
        var line = plt.Add.Scatter(results.Select(r => (double)r.Rank).ToArray(), results.Select(r => r.Nll).ToArray());
        line.LegendText = dylora ? "DyLoRA at rank b" : "truncated SVD of ΔW";
        var baseline = plt.Add.HorizontalLine(baseNll);
        baseline.LegendText = "base model";
        plt.Title($"Held-out NLL vs rank ({(dylora ? "DyLoRA" : "LoRA")})");
        plt.XLabel("rank");
        plt.YLabel("mean NLL (nats/token)");
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericFixedInterval(1);
        plt.ShowLegend();
        plt.SavePng(plotPath, 800, 500);
        Console.WriteLine($"smallest rank within {tolerance} nats of the best: {chosen}; plot: {plotPath}");
        if (json)
            JsonOutput.Write(new
            {
                method = dylora ? "dylora" : "svd",
                base_nll = baseNll,
                ranks = results.Select(r => new { rank = r.Rank, nll = r.Nll }).ToArray(),
                best_rank = results.MinBy(r => r.Nll).Rank,
                chosen_rank = chosen,
                plot = plotPath,
            });
        return 0;
    }
}
