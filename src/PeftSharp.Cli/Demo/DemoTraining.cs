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
    public double TokensPerSecond { get; private set; }

    public static DemoTraining Run(string label, CausalLM model, IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Param)> parameters,
        ModelTokenizer tokenizer, string trainText, string evalText, int context, int steps, int batch, double lr, ulong seed)
    {
        var train = TextData.Pack(tokenizer, [trainText], context).Examples;
        var eval = TextData.Pack(tokenizer, [evalText], context).Examples;
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
        using var trainer = new Trainer(model, groups, options, train, eval, padTokenId: tokenizer.EosTokenId ?? 0) { Progress = progress };
        trainer.Train();
        Console.Error.WriteLine();
        return run;
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
