using PeftSharp.Cli.Demo;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench.Tuners;

/// <summary>
/// Held-out perplexity of each method on the demo's two tasks (the held-out plays in lowercase, UPPERCASE text), on the
/// demo's trained base model, after the same number of steps with the same data, batch and learning rate, at a similar
/// trainable-parameter budget: LoRA r=8 on all linear layers sets the budget, the Houlsby and parallel bottleneck
/// widths are chosen to match it; (IA)³ has a fixed, much smaller size.
/// </summary>
public static class TunerQuality
{
    const int Context = 128, Batch = 4, EvalChars = 6000;
    const double LearningRate = 2e-3;

    public static object Run(string demoBase, int steps, string outDir)
    {
        if (!File.Exists(Path.Combine(demoBase, "config.json")))
            throw new PeftSharpException($"--demo-base: {demoBase} holds no trained demo model (run ./peftsharp demo once, or pass the folder)");
        var corpus = DemoCorpus.Load();
        var tokenizer = ModelTokenizer.Load(demoBase);
        var tasks = new (string Name, string Train, string Eval)[]
        {
            ("lowercase", corpus.WhisperTrain, corpus.WhisperValidation[..Math.Min(EvalChars, corpus.WhisperValidation.Length)]),
            ("UPPERCASE", corpus.ShoutTrain, corpus.ShoutValidation[..Math.Min(EvalChars, corpus.ShoutValidation.Length)]),
        };
        var ppl = new Dictionary<string, Dictionary<string, double>>();
        var counts = new Dictionary<string, long>();
        var missing = new Dictionary<string, string>();

        int hidden, layers;
        long budget;
        using (var probe = ModelLoader.Load(demoBase, ScalarType.BFloat16))
        {
            hidden = probe.Config.Hidden;
            layers = probe.Config.Layers;
            ppl["base"] = tasks.ToDictionary(t => t.Name, t => Perplexity(probe, tokenizer, t.Eval));
            budget = TunerSetup.Attach(probe, "lora", 8, TargetModules.AllLinear, 16, 2, seed: 1).TrainableCount;
        }
        int houlsbyWidth = TunerSetup.WidthForBudget(budget, hidden, layers, 2), parallelWidth = TunerSetup.WidthForBudget(budget, hidden, layers, 1);
        Console.Error.WriteLine($"bench tuners quality: budget {budget:N0} (LoRA r=8, all linear); Houlsby d={houlsbyWidth}, parallel d={parallelWidth}; {steps} steps of {Batch}×{Context}, lr {LearningRate}");

        foreach (var method in TunerSetup.Methods)
        {
            foreach (var (task, train, eval) in tasks)
            {
                using var model = ModelLoader.Load(demoBase, ScalarType.BFloat16);
                TunerSetup setup;
                try
                {
                    setup = TunerSetup.Attach(model, method, 8, TargetModules.AllLinear,
                        TunerSetup.ReductionFor(hidden, houlsbyWidth), TunerSetup.ReductionFor(hidden, parallelWidth), seed: 1);
                }
                catch (TunerUnavailableException ex)
                {
                    missing[method] = ex.Message;
                    break;
                }
                counts[method] = setup.TrainableCount;
                model.train();
                DemoTraining.Run($"{method} {task}", model, setup.Trainable, tokenizer, train, eval[..Math.Min(1500, eval.Length)], Context, steps,
                    TimeSpan.FromHours(1), Batch, LearningRate, seed: 7);
                model.eval();
                if (!ppl.TryGetValue(method, out var row)) ppl[method] = row = new();
                row[task] = Perplexity(model, tokenizer, eval);
            }
        }

        Console.WriteLine($"| method | trainable | {string.Join(" | ", tasks.Select(t => $"{t.Name} ppl"))} |");
        Console.WriteLine($"|---|---|{string.Concat(tasks.Select(_ => "---|"))}");
        foreach (var (method, row) in ppl)
            Console.WriteLine($"| {method} | {(counts.TryGetValue(method, out var c) ? c.ToString("N0") : "0")} | {string.Join(" | ", tasks.Select(t => row[t.Name].ToString("F3")))} |");
        foreach (var (m, why) in missing) Console.WriteLine($"{m}: not measured ({why})");

        string plot = Path.Combine(outDir, "tuners-perplexity.png");
        WritePlot(plot, ppl, tasks.Select(t => t.Name).ToArray());
        Console.WriteLine($"plot: {plot}");
        return new { budget, houlsby_width = houlsbyWidth, parallel_width = parallelWidth, steps, batch = Batch, context = Context, learning_rate = LearningRate,
                     trainable_parameters = counts, perplexity = ppl, not_measured = missing, plot };
    }

    internal static double Perplexity(CausalLM model, ModelTokenizer tokenizer, string text)
    {
        using var _ = no_grad();
        return Scoring.MeanNll(model, tokenizer.Encode(text), window: Context).Perplexity;
    }

    internal static void WritePlot(string path, Dictionary<string, Dictionary<string, double>> ppl, string[] tasks, string? title = null)
    {
        var plt = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var methods = ppl.Keys.ToArray();
        var bars = new List<ScottPlot.Bar>();
        for (int t = 0; t < tasks.Length; t++)
            for (int m = 0; m < methods.Length; m++)
                bars.Add(new ScottPlot.Bar
                {
                    Position = t * (methods.Length + 1) + m,
                    Value = ppl[methods[m]][tasks[t]],
                    FillColor = palette.GetColor(m),
                    Label = ppl[methods[m]][tasks[t]].ToString("F2"),
                });
        plt.Add.Bars(bars);
        for (int m = 0; m < methods.Length; m++)
            plt.Legend.ManualItems.Add(new ScottPlot.LegendItem { LabelText = methods[m], FillColor = palette.GetColor(m) });
        var ticks = tasks.Select((t, i) => new ScottPlot.Tick(i * (methods.Length + 1) + (methods.Length - 1) / 2.0, t)).ToArray();
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
        plt.Axes.Margins(bottom: 0);
        plt.Title(title ?? "Held-out perplexity on the demo's tasks (lower is better)");
        plt.YLabel("perplexity");
        plt.ShowLegend(ScottPlot.Alignment.UpperCenter); // the tallest bars sit at the corners
        plt.SavePng(path, 900, 520);
    }
}
