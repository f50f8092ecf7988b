using System.CommandLine;
using PeftSharp.Cli.Commands;

namespace PeftSharp.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("peftsharp: parameter-efficient fine-tuning of transformer language models for .NET")
        {
            EvalCommand.Create(),
            GenerateCommand.Create(),
            InspectCommand.Create(),
            MergeCommand.Create(),
            QuantizeCommand.Create(),
        };
        var parse = root.Parse(args);
        return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
