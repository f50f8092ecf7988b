using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Cli.Commands.Bench;
using PeftSharp.Cli.Demo;

namespace PeftSharp.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        if (HugePages.ReexecIfNeeded(args) is int exitCode) return exitCode;
        var root = new RootCommand("peftsharp: parameter-efficient fine-tuning of transformer language models for .NET")
        {
            EvalCommand.Create(),
            GenerateCommand.Create(),
            InspectCommand.Create(),
            MergeCommand.Create(),
            CombineCommand.Create(),
            MergeModelsCommand.Create(),
            LoraHubCommand.Create(),
            ExportRankCommand.Create(),
            SweepRanksCommand.Create(),
            BenchCommand.Create(),
            DemoCommand.Create(),
            TrainCommand.Create(),
            QuantizeCommand.Create(),
            BitDeltaCommand.Create(),
        };
        var parse = root.Parse(args);
        return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
