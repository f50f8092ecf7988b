using System.Globalization;
using PeftSharp.Training;
using Spectre.Console;

namespace PeftSharp.Cli.Training;

/// <summary>
/// Shows a <see cref="Trainer"/>'s progress on stderr: a live Spectre.Console bar (step, loss, learning rate,
/// tokens/s, ETA) when stderr is a terminal, plain lines otherwise (logs, CI), at most one every few seconds
/// plus every evaluation and checkpoint. stdout stays free for results and <c>--json</c>.
/// </summary>
/// <example>
/// <code>
/// var display = new ProgressDisplay();
/// using var trainer = new Trainer(model, groups, options, train, validation) { Progress = display };
/// var result = display.Run(() => trainer.Train(cancellation));
/// </code>
/// </example>
public sealed class ProgressDisplay : IProgress<TrainingProgress>
{
    readonly bool _interactive;
    readonly TextWriter _plain;
    readonly TimeSpan _plainInterval;
    IAnsiConsole? _console;
    ProgressTask? _task;
    DateTime _lastPlainLine = DateTime.MinValue;

    /// <param name="interactive">Draw the live bar; default: when stderr is a terminal.</param>
    /// <param name="plainOutput">Where plain lines go; default stderr.</param>
    /// <param name="plainInterval">Least time between plain step lines; default 5 s.</param>
    public ProgressDisplay(bool? interactive = null, TextWriter? plainOutput = null, TimeSpan? plainInterval = null)
    {
        _interactive = interactive ?? !Console.IsErrorRedirected;
        _plain = plainOutput ?? Console.Error;
        _plainInterval = plainInterval ?? TimeSpan.FromSeconds(5);
    }

    /// <summary>Runs <paramref name="train"/> (which makes the reports) while the display is live, and returns its result.</summary>
    public T Run<T>(Func<T> train)
    {
        if (!_interactive) return train();
        _console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        try
        {
            return _console.Progress()
                .AutoClear(false)
                .HideCompleted(false)
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn { Width = 24 }, new PercentageColumn())
                .Start(context =>
                {
                    _task = context.AddTask("starting", autoStart: true, maxValue: 1);
                    return train();
                });
        }
        finally
        {
            (_task, _console) = (null, null);
        }
    }

    public void Report(TrainingProgress p)
    {
        switch (p.Kind)
        {
            case TrainingEventKind.Step:
                if (_task is not null)
                {
                    _task.MaxValue = p.TotalSteps;
                    _task.Value = p.Step;
                    _task.Description = Markup.Escape(BarLine(p));
                }
                else if (DateTime.UtcNow - _lastPlainLine >= _plainInterval || p.Step == p.TotalSteps || p.Step == 1)
                {
                    _plain.WriteLine(StepLine(p));
                    _lastPlainLine = DateTime.UtcNow;
                }
                break;
            case TrainingEventKind.Evaluation:
                Line($"step {p.Step}/{p.TotalSteps}  eval loss {Num(p.EvalLoss ?? double.NaN, "F4")}");
                break;
            case TrainingEventKind.Checkpoint:
                Line($"step {p.Step}/{p.TotalSteps}  saved {p.CheckpointDir}");
                break;
        }
    }

    // Lines written through the live console appear above the bar; plain mode writes them as they come.
    void Line(string text)
    {
        if (_console is not null) _console.MarkupLine(Markup.Escape(text));
        else _plain.WriteLine(text);
    }

    static string StepLine(TrainingProgress p) =>
        $"step {p.Step}/{p.TotalSteps}  epoch {Num(p.Epoch, "F2")}  loss {Num(p.Loss, "F4")}  lr {Num(p.LearningRate, "0.00e+00")}  " +
        $"{Tokens(p.TokensPerSecond)} tok/s  ETA {Duration(p.Eta)}";

    // Short enough to leave room for the bar in an 80-column terminal.
    static string BarLine(TrainingProgress p) =>
        $"{p.Step}/{p.TotalSteps} loss {Num(p.Loss, "F3")} lr {Num(p.LearningRate, "0.0e+0")} {Tokens(p.TokensPerSecond)} tok/s ETA {Duration(p.Eta)}";

    static string Num(double x, string format) => double.IsNaN(x) ? "-" : x.ToString(format, CultureInfo.InvariantCulture);

    static string Tokens(double perSecond) => perSecond switch
    {
        double.NaN => "-",
        >= 1e6 => (perSecond / 1e6).ToString("F1", CultureInfo.InvariantCulture) + "M",
        >= 1e4 => (perSecond / 1e3).ToString("F1", CultureInfo.InvariantCulture) + "k",
        _ => perSecond.ToString("F0", CultureInfo.InvariantCulture),
    };

    static string Duration(TimeSpan? t) => t is not { } d ? "-" : d.TotalHours >= 1
        ? $"{(int)d.TotalHours}:{d.Minutes:00}:{d.Seconds:00}"
        : $"{d.Minutes:00}:{d.Seconds:00}";
}
