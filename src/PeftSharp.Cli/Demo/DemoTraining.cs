using PeftSharp.Models;
using PeftSharp.Tokenization;
using PeftSharp.Training;

namespace PeftSharp.Cli.Demo;

/// <summary>One training run inside the demo: pack text into blocks, train, and keep the loss curve for the plot.</summary>
public sealed class DemoTraining
{
    public List<(long Step, double Loss)> TrainLoss { get; } = [];
    public List<(long Step, double Loss)> EvalLoss { get; } = [];
    public TimeSpan Elapsed { get; private set; }
    public long Steps => TrainLoss.Count == 0 ? 0 : TrainLoss[^1].Step;

    public void SaveCurves(string path) => File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize(new
    {
        train = TrainLoss.Select(p => new[] { p.Step, p.Loss }),
        eval = EvalLoss.Select(p => new[] { p.Step, p.Loss }),
        seconds = Elapsed.TotalSeconds,
    }));

    public static DemoTraining? LoadCurves(string path)
    {
        if (!File.Exists(path)) return null;
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
        var run = new DemoTraining { Elapsed = TimeSpan.FromSeconds(doc.RootElement.GetProperty("seconds").GetDouble()) };
        foreach (var p in doc.RootElement.GetProperty("train").EnumerateArray()) run.TrainLoss.Add(((long)p[0].GetDouble(), p[1].GetDouble()));
        foreach (var p in doc.RootElement.GetProperty("eval").EnumerateArray()) run.EvalLoss.Add(((long)p[0].GetDouble(), p[1].GetDouble()));
        return run;
    }
    public double TokensPerSecond { get; private set; }

    /// <summary>
    /// Trains for at most <paramref name="maxSteps"/> steps, fewer when a step is slow on this machine: the step time is
    /// measured first (one forward/backward after a warm-up) so the run fits in <paramref name="budget"/>.
    /// </summary>
    public static DemoTraining Run(string label, CausalLM model, IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Param)> parameters,
        ModelTokenizer tokenizer, string trainText, string evalText, int context, int maxSteps, TimeSpan budget, int batch, double lr, ulong seed,
        Action<long>? beforeStep = null, bool quiet = false, Func<TorchSharp.torch.Tensor?>? extraLoss = null)
    {
        var train = TextData.Pack(tokenizer, [trainText], context).Examples;
        var eval = TextData.Pack(tokenizer, [evalText], context).Examples;
        double stepSeconds = SecondsPerStep(model, train.Take(batch).ToList(), tokenizer.EosTokenId ?? 0);
        int steps = (int)Math.Clamp(budget.TotalSeconds / stepSeconds, Math.Min(10, maxSteps), maxSteps);
        if (!quiet) Console.Error.WriteLine($"  {label}: {steps} steps of {batch}×{context} tokens (~{stepSeconds:F2} s each here)");
        var groups = ParameterGroups.DecayAndNoDecay(parameters, lr, weightDecay: 0.01);
        var options = new TrainingOptions
        {
            MaxSteps = steps,
            BatchSize = batch,
            Schedule = ScheduleKind.Cosine,
            WarmupSteps = Math.Max(1, steps / 20),
            LoggingSteps = 1,
            EvalSteps = Math.Max(1, steps / 4),
            Seed = seed,
        };
        var run = new DemoTraining();
        var progress = new Reporter(label, run);
        using var trainer = new Trainer(model, groups, options, train, eval, padTokenId: tokenizer.EosTokenId ?? 0) { Progress = progress, BeforeStep = beforeStep, ExtraLoss = extraLoss };
        trainer.Train();
        Console.Error.WriteLine();
        return run;
    }

    static double SecondsPerStep(CausalLM model, IReadOnlyList<TrainingExample> batch, long pad)
    {
        double seconds = 0;
        for (int i = 0; i < 2; i++)
        {
            using var scope = TorchSharp.torch.NewDisposeScope();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using var b = Batch.Collate(batch, pad, model.Device);
            var hidden = model.Hidden(b.InputIds, null, b.ModelMask);
            CausalLMLoss.Backward(model, hidden, b.Labels, 1.0);
            seconds = clock.Elapsed.TotalSeconds * 1.1; // the optimizer and bookkeeping add a little
        }
        foreach (var p in model.parameters()) p.grad = null;
        return seconds;
    }

    sealed class Reporter(string label, DemoTraining run) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p)
        {
            run.Elapsed = p.Elapsed;
            if (p.Kind == TrainingEventKind.Step)
            {
                run.TrainLoss.Add((p.Step, p.Loss));
                run.TokensPerSecond = p.TokensPerSecond;
                Console.Error.Write($"\r  {label}: step {p.Step}/{p.TotalSteps}  loss {p.Loss:F3}  {p.TokensPerSecond:F0} tok/s  ETA {p.Eta:mm\\:ss}   ");
            }
            else if (p.Kind == TrainingEventKind.Evaluation && p.EvalLoss is double e)
                run.EvalLoss.Add((p.Step, e));
        }
    }
}
