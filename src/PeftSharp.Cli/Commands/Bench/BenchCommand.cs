using System.CommandLine;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary><c>peftsharp bench ...</c>: speed and memory measured as ratios within one run.</summary>
public static class BenchCommand
{
    public static Command Create() => new("bench", "benchmarks (results as ratios measured in one run)")
    {
        BenchInferCommand.Create(),
        BenchTrainCommand.Create(),
        BenchDyLoraCommand.Create(),
        BenchServeCommand.Create(),
        BenchDpCommand.Create(),
        BenchEvaluateCommand.Create(),
        BenchBitDeltaCommand.Create(),
        BenchTunersCommand.Create(),
        BenchGaLoreCommand.Create(),
        BenchPromptsCommand.Create(),
        BenchComposeCommand.Create(),
        BenchQaLoraCommand.Create(),
        BenchMixturesCommand.Create(),
        BenchLstCommand.Create(),
    };

    /// <summary>--config: a config.json (or a folder holding one); the model is randomly initialised.</summary>
    public static Option<string> ConfigOption() => new("--config")
    {
        Description = "config.json of the model to build with random weights (e.g. GPT-2 124M's)",
        Required = true,
    };

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
