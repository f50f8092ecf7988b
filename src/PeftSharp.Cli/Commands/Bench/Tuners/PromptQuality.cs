using PeftSharp.Cli.Demo;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Prompts;
using PeftSharp.Tuners.UniPelt;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench.Tuners;

/// <summary>
/// Held-out perplexity and training speed of the soft-prompt methods next to LoRA on the demo's two tasks (lowercase,
/// UPPERCASE), on the demo's trained base, after the same number of steps with the same data and batch. Each method
/// keeps the learning rate its usual recipes use (soft prompts need far larger rates than LoRA: PEFT's prompt-tuning
/// examples use 3e-2, its prefix-tuning ones 1e-2), and the table gives every method's trainable-parameter count, so
/// the budgets can be compared directly.
/// </summary>
public static class PromptQuality
{
    const int Context = 128, Batch = 4, EvalChars = 6000;

    /// <summary>One measured method: a name, its PEFT config and its learning rate.</summary>
    public sealed record Method(string Name, Func<PeftConfig> Config, double LearningRate);

    /// <summary>LoRA at two ranks, each soft-prompt method at 20 virtual tokens (prompt tuning also at 100), and UniPELT (LoRA r=8, 10-token prefix, 16-wide adapter, gated).</summary>
    public static IReadOnlyList<Method> Methods { get; } =
    [
        new("lora r=8", () => new LoraConfig { R = 8, LoraAlpha = 16 }, 2e-3),
        new("lora r=1", () => new LoraConfig { R = 1, LoraAlpha = 2 }, 2e-3),
        new("prompt-tuning n=20", () => new PromptTuningConfig { NumVirtualTokens = 20 }, 3e-2),
        new("prompt-tuning n=100", () => new PromptTuningConfig { NumVirtualTokens = 100 }, 3e-2),
        new("p-tuning n=20", () => new PromptEncoderConfig { NumVirtualTokens = 20 }, 1e-2),
        new("prefix-tuning n=20", () => new PrefixTuningConfig { NumVirtualTokens = 20 }, 1e-2),
        new("prefix-tuning n=20 proj", () => new PrefixTuningConfig { NumVirtualTokens = 20, PrefixProjection = true, EncoderHiddenSize = 64 }, 1e-2),
        new("unipelt", () => new UniPeltConfig { R = 8, LoraAlpha = 16, NumVirtualTokens = 10, BottleneckSize = 16 }, 2e-3),
    ];

    /// <summary>Trains every method (or those named in <paramref name="only"/>) on both tasks and reports the table, a plot and a JSON object.</summary>
    public static object Run(string demoBase, int steps, string outDir, IReadOnlySet<string>? only = null)
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
        var tokensPerSecond = new Dictionary<string, double>();
        using (var probe = ModelLoader.Load(demoBase, ScalarType.BFloat16))
            ppl["base"] = tasks.ToDictionary(t => t.Name, t => TunerQuality.Perplexity(probe, tokenizer, t.Eval));
        Console.Error.WriteLine($"bench prompts quality: {steps} steps of {Batch}×{Context} per method and task");

        foreach (var method in Methods.Where(m => only is null || only.Contains(m.Name)))
        {
            var speeds = new List<double>();
            foreach (var (task, train, eval) in tasks)
            {
                using var model = ModelLoader.Load(demoBase, ScalarType.BFloat16);
                var peft = new PeftModel(model);
                peft.AddAdapter("default", method.Config(), seed: 1);
                peft.SetAdapter("default");
                counts[method.Name] = peft.CountParameters().Trainable;
                model.train();
                var run = DemoTraining.Run($"{method.Name} {task}", model, peft.TrainableParameters(), tokenizer, train, eval[..Math.Min(1500, eval.Length)],
                    Context, steps, TimeSpan.FromHours(1), Batch, method.LearningRate, seed: 7);
                speeds.Add(run.TokensPerSecond);
                model.eval();
                if (!ppl.TryGetValue(method.Name, out var row)) ppl[method.Name] = row = new();
                row[task] = TunerQuality.Perplexity(model, tokenizer, eval);
            }
            tokensPerSecond[method.Name] = speeds.Average();
        }

        double reference = tokensPerSecond.TryGetValue(Methods[0].Name, out var r0) ? r0 : double.NaN;
        Console.WriteLine($"| method | trainable | lr | {string.Join(" | ", tasks.Select(t => $"{t.Name} ppl"))} | train speed vs {Methods[0].Name} |");
        Console.WriteLine($"|---|---|---|{string.Concat(tasks.Select(_ => "---|"))}---|");
        foreach (var (name, row) in ppl)
        {
            var m = Methods.FirstOrDefault(x => x.Name == name);
            string speed = tokensPerSecond.TryGetValue(name, out var tps) ? $"{tps / reference:F2}×" : "";
            Console.WriteLine($"| {name} | {(counts.TryGetValue(name, out var c) ? c.ToString("N0") : "0")} | {(m is null ? "" : m.LearningRate.ToString("G3"))} | " +
                              $"{string.Join(" | ", tasks.Select(t => row[t.Name].ToString("F3")))} | {speed} |");
        }
        string plot = Path.Combine(outDir, "prompts-perplexity.png");
        TunerQuality.WritePlot(plot, ppl, tasks.Select(t => t.Name).ToArray(), "Soft prompts and LoRA: held-out perplexity on the demo's tasks (lower is better)");
        Console.WriteLine($"plot: {plot}");
        return new
        {
            steps, batch = Batch, context = Context,
            learning_rates = Methods.ToDictionary(m => m.Name, m => m.LearningRate),
            trainable_parameters = counts,
            perplexity = ppl,
            train_tokens_per_second_ratio = tokensPerSecond.ToDictionary(kv => kv.Key, kv => kv.Value / reference),
            plot,
        };
    }
}
