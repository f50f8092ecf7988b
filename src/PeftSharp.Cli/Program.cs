using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Cli.Commands.Bench;
using PeftSharp.Cli.Commands.Data;
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
            EvaluateCommand.Create(),
            DataCommand.Create(),
            GenerateCommand.Create(),
            InspectCommand.Create(),
            MergeCommand.Create(),
            CombineCommand.Create(),
            MergeModelsCommand.Create(),
            LoraHubCommand.Create(),
            NoahSearchCommand.Create(),
            UniPeltExportCommand.Create(),
            PromptSimilarityCommand.Create(),
            HyperformerExportCommand.Create(),
            ExportRankCommand.Create(),
            SweepRanksCommand.Create(),
            BenchCommand.Create(),
            DemoCommand.Create(),
            TrainCommand.Create(),
            QuantizeCommand.Create(),
            ServeCommand.Create(),
            DpCommand.Create(),
            FederatedCommand.Create(),
            BitDeltaCommand.Create(),
            TokenizeCommand.Create(),
            CompletionCommand.Create(),
            ExpertsCommand.Create(),
        };
        root.HelpName = "peftsharp"; // usage lines say what users type, not the assembly name (PeftSharp.Cli)
        var parse = root.Parse(args);
        // A mistake on the command line (unknown flag, a value out of its range...): one line, exit code 1.
        if (parse.Errors.Count > 0 && parse.Action is System.CommandLine.Invocation.ParseErrorAction)
        {
            var names = new List<string>();
            for (var r = parse.CommandResult; r is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
                if (r.Command is not RootCommand) names.Insert(0, r.Command.Name);
            Console.Error.WriteLine($"error: {parse.Errors[0].Message} (see: {string.Join(' ', ["peftsharp", .. names, "--help"])})");
            return 1;
        }
        return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
