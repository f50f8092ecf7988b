using System.CommandLine;
using PeftSharp.Cli.Demo;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Tuners.DyLora;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench dylora</c>: DyLoRA's claim on our own data. On the demo's base model and a task it has not seen
/// (the held-out plays written in lowercase), one DyLoRA run with r_max = 8 against eight LoRA runs (r = 1…8) with the same step
/// budget each; then every rank of the DyLoRA adapter, every LoRA at its own rank, and the r = 8 LoRA cut to each
/// rank are scored on held-out validation text.
/// </summary>
public static class BenchDyLoraCommand
{
    public static Command Create()
    {
        var steps = new Option<int>("--steps") { Description = "optimizer steps per run (the same for every run)", DefaultValueFactory = _ => 100 }.AtLeast(1);
        var rMax = new Option<int>("--r-max") { DefaultValueFactory = _ => 8 }.AtLeast(1);
        var cache = new Option<string>("--cache") { Description = "where the demo's base model is (trained there if missing)", DefaultValueFactory = _ => Path.Combine(".cache", "demo") };
        var outDir = new Option<string>("--out") { Description = "folder for the table, plot and adapters", DefaultValueFactory = _ => Path.Combine("runs", "bench-dylora") };
        var scale = new Option<string>("--scale") { Description = "full (default) or tiny (a smoke test)", DefaultValueFactory = _ => "full" };
        var notFrozen = new Option<bool>("--not-frozen") { Description = "DyLoRA trains all first b components (default: frozen, only component b)" };
        var json = CliOptions.Json();
        var command = new Command("dylora", "one DyLoRA run vs one LoRA run per rank: loss at every rank and time") { steps, rMax, cache, outDir, scale, notFrozen, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(steps), parse.GetValue(rMax), parse.GetValue(cache)!, parse.GetValue(outDir)!,
            DemoScale.Parse(parse.GetValue(scale)!), !parse.GetValue(notFrozen), parse.GetValue(json))));
        return command;
    }

    const ulong Seed = 1234;

    static int Run(int steps, int rMax, string cacheDir, string outDir, DemoScale scale, bool frozen, bool json)
    {
        Directory.CreateDirectory(outDir);
        var corpus = DemoCorpus.Load();
        var baseModel = DemoBaseModel.EnsureTrained(cacheDir, corpus, scale, Seed);
        var tokenizer = ModelTokenizer.Load(baseModel.Folder);
        using var model = ModelLoader.Load(baseModel.Folder, ScalarType.BFloat16);
        // The held-out plays in lowercase: text the base never saw, in a form it cannot already predict well.
        string trainText = corpus.WhisperTrain;
        string evalText = corpus.WhisperValidation[..Math.Min(scale.EvalChars, corpus.WhisperValidation.Length)];
        var evalIds = tokenizer.Encode(evalText);
        double Nll() { model.eval(); return Scoring.MeanNll(model, evalIds).MeanNll; }
        double baseNll = Nll();
        Console.Error.WriteLine($"base model: held-out NLL {baseNll:F4}");

        var runtime = new Dictionary<string, double>();
        LoraModel? lora = null;
        (double Seconds, string Name) Train(string name, LoraConfig config, Action<long>? beforeStep = null)
        {
            if (lora is null) lora = LoraModel.Create(model, config, name, seed: (long)Seed);
            else lora.AddAdapter(name, config, seed: (long)Seed);
            lora.SetAdapter(name);
            model.train();
            // The trainer's own clock: excludes data packing and the warm-up passes before the first step.
            var run = DemoTraining.Run(name, model, lora.TrainableParameters(), tokenizer, trainText, evalText, scale.Context, steps,
                TimeSpan.FromDays(1), scale.AdapterBatch, 2e-3, Seed, beforeStep, quiet: true);
            runtime[name] = run.Elapsed.TotalSeconds;
            return (run.Elapsed.TotalSeconds, name);
        }
        LoraConfig Config(int r) => new() { R = r, LoraAlpha = 2 * rMax, TargetModules = TargetModules.AllLinear };

        // One DyLoRA run: each step draws b ∈ [1, r_max] and trains the truncated factors with scaling α/b.
        var dy = new DyLoraConfig { R = rMax, LoraAlpha = 2 * rMax, TargetModules = TargetModules.AllLinear, Frozen = frozen };
        var sampler = new RankSampler(1, rMax, "uniform", seed: (int)Seed);
        Train("dylora", dy, step => lora!.SetRank(sampler.ForStep(step), "dylora", frozen));
        var dylora = new double[rMax + 1];
        for (int b = 1; b <= rMax; b++) { lora!.SetRank(b, "dylora"); dylora[b] = Nll(); }
        lora!.SetRank(null, "dylora");
        AdapterFiles.Save(lora!, Path.Combine(outDir, "adapters"), "dylora", baseModel.Folder);

        // Eight LoRA runs, one per rank, same steps; the same α so that scaling α/r matches DyLoRA's at each rank.
        var separate = new double[rMax + 1];
        for (int r = 1; r <= rMax; r++)
        {
            Train($"lora_r{r}", Config(r));
            separate[r] = Nll();
            Console.Error.WriteLine($"  LoRA r={r}: NLL {separate[r]:F4}   DyLoRA at b={r}: {dylora[r]:F4}");
        }
        // The r_max LoRA cut to each rank (first b components, scaling α/b), as DyLoRA is evaluated.
        var truncated = new double[rMax + 1];
        for (int b = 1; b <= rMax; b++) { lora!.SetRank(b, $"lora_r{rMax}"); truncated[b] = Nll(); }
        lora!.SetRank(null, $"lora_r{rMax}");

        double dyTime = runtime["dylora"];
        double loraTime = Enumerable.Range(1, rMax).Sum(r => runtime[$"lora_r{r}"]);
        var rows = Enumerable.Range(1, rMax).Select(b =>
        {
            double improvement = baseNll - separate[b];
            double gap = dylora[b] - separate[b];
            return new { rank = b, lora = separate[b], dylora = dylora[b], lora_rmax_truncated = truncated[b],
                         gap_percent_of_improvement = improvement > 0 ? 100 * gap / improvement : (double?)null };
        }).ToArray();
        bool within = rows.All(r => r.gap_percent_of_improvement is double g && g <= 5);

        Console.WriteLine($"| rank | LoRA trained at r | DyLoRA at b | gap (% of LoRA's gain) | LoRA r={rMax} cut to b |");
        Console.WriteLine("|---|---|---|---|---|");
        foreach (var r in rows)
            Console.WriteLine($"| {r.rank} | {r.lora:F4} | {r.dylora:F4} | {(r.gap_percent_of_improvement is double g ? $"{g:F1}%" : "n/a")} | {r.lora_rmax_truncated:F4} |");
        Console.WriteLine($"base NLL {baseNll:F4}; DyLoRA time {dyTime:F0} s vs {loraTime:F0} s for the {rMax} LoRA runs ({dyTime / loraTime:F3}×); " +
                          $"DyLoRA within 5% of the LoRA gain at every rank: {(within ? "yes" : "no")}");

        string plot = Path.Combine(outDir, "dylora.png");
        var plt = new ScottPlot.Plot();
        double[] xs = Enumerable.Range(1, rMax).Select(b => (double)b).ToArray();
        plt.Add.Scatter(xs, rows.Select(r => r.lora).ToArray()).LegendText = "LoRA trained at rank r (8 runs)";
        plt.Add.Scatter(xs, rows.Select(r => r.dylora).ToArray()).LegendText = "DyLoRA (1 run) at rank b";
        plt.Add.Scatter(xs, rows.Select(r => r.lora_rmax_truncated).ToArray()).LegendText = $"LoRA r={rMax} cut to rank b";
        plt.Add.HorizontalLine(baseNll).LegendText = "base model";
        plt.Title("Held-out NLL vs rank");
        plt.XLabel("rank");
        plt.YLabel("mean NLL (nats/token)");
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericFixedInterval(1);
        plt.ShowLegend();
        plt.SavePng(plot, 900, 520);
        Console.WriteLine($"plot: {plot}");
        if (json)
            JsonOutput.Write(new { base_nll = baseNll, steps, r_max = rMax, frozen, ranks = rows, dylora_seconds = dyTime, lora_seconds_total = loraTime,
                                   time_ratio = dyTime / loraTime, within_5_percent = within, plot });
        return 0;
    }
}
