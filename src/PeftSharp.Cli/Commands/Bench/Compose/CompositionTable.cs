using System.Globalization;
using PeftSharp.Cli.Demo;
using PeftSharp.Composition;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench.Compose;

/// <summary>
/// What composition keeps and what it loses, on the demo's trained base and three synthetic tasks made from held-out
/// plays: lowercase, UPPERCASE and Title Case. One LoRA (r=8, PEFT's default targets) and one Pfeiffer bottleneck
/// adapter are trained per task; the table gives the held-out NLL on every task of the base, each single adapter, each
/// combination type of <c>combine</c> over the three LoRAs (weights 1, density 0.5), LoraHub composing for each task
/// the two LoRAs of the other tasks from five examples, and AdapterFusion over the three bottleneck adapters trained on
/// the tasks mixed.
/// </summary>
public static class CompositionTable
{
    const int Context = 128, Batch = 4, EvalChars = 3000, FewShot = 5;
    const double LearningRate = 2e-3;

    /// <summary>Runs the whole table; prints it as markdown, writes a heat-map PNG and returns a JSON-ready object.</summary>
    public static object Run(string demoBase, int steps, string outDir)
    {
        if (!File.Exists(Path.Combine(demoBase, "config.json")))
            throw new PeftSharpException($"--demo-base: {demoBase} holds no trained demo model (run ./peftsharp demo once, or pass the folder)");
        var corpus = DemoCorpus.Load();
        var tokenizer = ModelTokenizer.Load(demoBase);
        var tasks = new (string Name, string Train, string Eval)[]
        {
            ("lowercase", corpus.WhisperTrain, corpus.WhisperValidation),
            ("UPPERCASE", corpus.ShoutTrain, corpus.ShoutValidation),
            ("Title Case", TitleCase(corpus.HeldOutTrain), TitleCase(corpus.HeldOutValidation)),
        };
        var evalIds = tasks.Select(t => tokenizer.Encode(t.Eval[..Math.Min(EvalChars, t.Eval.Length)])).ToArray();
        var names = tasks.Select(t => Slug(t.Name)).ToArray();
        var rows = new List<(string Row, double[] Nll)>();
        double[] Score(CausalLM m)
        {
            using var _ = no_grad();
            return evalIds.Select(ids => Scoring.MeanNll(m, ids, window: Context).MeanNll).ToArray();
        }
        void Add(string row, double[] nll)
        {
            rows.Add((row, nll));
            Console.Error.WriteLine($"  {row,-28} " + string.Join("  ", nll.Select((v, i) => $"{tasks[i].Name} {v:F3}")));
        }
        Console.Error.WriteLine($"bench compose tasks: {tasks.Length} tasks, {steps} steps of {Batch}×{Context} per adapter, lr {LearningRate}");

        // ---- LoRA: single adapters, every combination type, LoraHub
        using (var model = ModelLoader.Load(demoBase, ScalarType.BFloat16))
        {
            model.eval();
            Add("base", Score(model));
            var config = new LoraConfig { R = 8, LoraAlpha = 16 };
            var lora = LoraModel.Create(model, config, names[0], seed: 1);
            for (int i = 1; i < names.Length; i++) lora.AddAdapter(names[i], config, seed: 1 + i);
            for (int i = 0; i < tasks.Length; i++)
            {
                lora.SetAdapter(names[i]);
                Train($"lora {tasks[i].Name}", model, lora.TrainableParameters(), tokenizer, tasks[i].Train, tasks[i].Eval, steps);
                Add($"LoRA {tasks[i].Name}", Score(model));
            }
            foreach (var n in names) lora.SetTrainable(n, false);
            foreach (var type in WeightedAdapters.CombinationTypes)
            {
                lora.AddWeightedAdapter(names, names.Select(_ => 1.0).ToArray(), "combined", type, density: 0.5, seed: 1);
                lora.SetAdapter("combined");
                Add($"combine {type}", Score(model));
                lora.DeleteAdapter("combined");
            }
            var hub = new double[tasks.Length];
            for (int i = 0; i < tasks.Length; i++)
            {
                var modules = names.Where((_, j) => j != i).ToList();
                var examples = TextData.Pack(tokenizer, [tasks[i].Train[..Math.Min(20000, tasks[i].Train.Length)]], Context).Examples.Take(FewShot).ToList();
                LoraHub.AddComposed(lora, modules, "hub");
                LoraHub.Search(lora, modules, "hub", () => ValidationLoss.Mean(model, examples, tokenizer.EosTokenId ?? 0, Batch), new LoraHub.Options { Seed = 1 });
                lora.SetAdapter("hub");
                hub[i] = Score(model)[i];
                lora.DeleteAdapter("hub");
            }
            Add("LoraHub (other tasks' LoRAs)", hub);
        }

        // ---- bottleneck adapters and AdapterFusion
        using (var model = ModelLoader.Load(demoBase, ScalarType.BFloat16))
        {
            var adapterConfig = AdapterHubConfig.Pfeiffer(16);
            var hubModel = AdapterHubModel.Create(model, adapterConfig, names[0], seed: 1);
            for (int i = 1; i < names.Length; i++) hubModel.AddAdapter(names[i], adapterConfig, seed: 1 + i);
            for (int i = 0; i < tasks.Length; i++)
            {
                hubModel.SetActive(names[i], trainable: true);
                Train($"adapter {tasks[i].Name}", model, hubModel.ParametersOf(names[i]).ToList(), tokenizer, tasks[i].Train, tasks[i].Eval, steps);
                model.eval();
                Add($"adapter {tasks[i].Name}", Score(model));
            }
            hubModel.SetActive(null, trainable: false);
            var fusion = AdapterFusionModel.For(model);
            fusion.AddFusion("fusion", AdapterFusionConfig.FromPresetName("dynamic"), names, seed: 1);
            fusion.SetActive("fusion");
            int share = tasks.Min(t => t.Train.Length) / 2;
            string mixed = string.Join("\n\n", tasks.Select(t => t.Train[..share]));
            Train("fusion", model, fusion.ParametersOf("fusion").ToList(), tokenizer, mixed, string.Join("\n\n", tasks.Select(t => t.Eval[..500])), steps,
                fusion.RegularizationLoss);
            model.eval();
            Add("AdapterFusion (3 adapters)", Score(model));
        }

        Console.WriteLine($"| held-out NLL (nats/token) | {string.Join(" | ", tasks.Select(t => t.Name))} |");
        Console.WriteLine($"|---|{string.Concat(tasks.Select(_ => "---:|"))}");
        foreach (var (row, nll) in rows) Console.WriteLine($"| {row} | {string.Join(" | ", nll.Select(v => v.ToString("F3", CultureInfo.InvariantCulture)))} |");
        string plot = Path.Combine(outDir, "composition-nll.png");
        WriteHeatMap(plot, rows, tasks.Select(t => t.Name).ToArray());
        Console.WriteLine($"plot: {plot}");
        return new
        {
            steps, batch = Batch, context = Context, learning_rate = LearningRate, few_shot = FewShot,
            tasks = tasks.Select(t => t.Name).ToArray(),
            nll = rows.ToDictionary(r => r.Row, r => r.Nll),
            plot,
        };
    }

    static void Train(string label, CausalLM model, IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Param)> parameters, ModelTokenizer tokenizer,
        string train, string eval, int steps, Func<Tensor?>? extraLoss = null)
    {
        model.train();
        DemoTraining.Run(label, model, parameters, tokenizer, train, eval[..Math.Min(1500, eval.Length)], Context, steps, TimeSpan.FromHours(1), Batch,
            LearningRate, seed: 7, extraLoss: extraLoss);
        model.eval();
    }

    /// <summary>Every word's first letter upper case, the rest lower case.</summary>
    internal static string TitleCase(string text)
    {
        var chars = text.ToLowerInvariant().ToCharArray();
        for (int i = 0; i < chars.Length; i++)
            if (char.IsLetter(chars[i]) && (i == 0 || !char.IsLetter(chars[i - 1]) && chars[i - 1] != '\''))
                chars[i] = char.ToUpperInvariant(chars[i]);
        return new string(chars);
    }

    static string Slug(string task) => task.Replace(' ', '_').ToLowerInvariant();

    static void WriteHeatMap(string path, List<(string Row, double[] Nll)> rows, string[] tasks)
    {
        var values = new double[rows.Count, tasks.Length];
        for (int r = 0; r < rows.Count; r++)
            for (int t = 0; t < tasks.Length; t++) values[r, t] = rows[r].Nll[t];
        var plt = new ScottPlot.Plot();
        var heat = plt.Add.Heatmap(values);
        heat.Colormap = new ScottPlot.Colormaps.Viridis();
        plt.Add.ColorBar(heat);
        for (int r = 0; r < rows.Count; r++)
            for (int t = 0; t < tasks.Length; t++)
            {
                var label = plt.Add.Text(values[r, t].ToString("F2", CultureInfo.InvariantCulture), t, rows.Count - 1 - r);
                label.LabelFontColor = ScottPlot.Colors.White;
                label.LabelAlignment = ScottPlot.Alignment.MiddleCenter;
            }
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(tasks.Select((t, i) => new ScottPlot.Tick(i, t)).ToArray());
        plt.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(rows.Select((r, i) => new ScottPlot.Tick(rows.Count - 1 - i, r.Row)).ToArray());
        plt.Title("Held-out NLL per task (nats/token, lower is better)");
        plt.SavePng(path, 900, 140 + 26 * rows.Count);
    }
}
