using System.CommandLine;
using PeftSharp.Tuners.DyLora;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp export-rank</c>: a plain PEFT LoRA adapter of rank b cut from a DyLoRA adapter.</summary>
public static class ExportRankCommand
{
    public static Command Create()
    {
        var adapter = new Option<string>("--adapter") { Description = "DyLoRA (or LoRA) adapter folder", Required = true };
        var rank = new Option<int>("--rank") { Description = "rank b of the exported adapter (1..r)", Required = true }.AtLeast(1);
        var outDir = new Option<string>("--out") { Description = "new folder for the rank-b adapter", Required = true };
        var json = CliOptions.Json();
        var command = new Command("export-rank", "write a plain PEFT LoRA adapter of rank b (first b components, scaling α/b)") { adapter, rank, outDir, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var written = DyLoraRanks.ExportRank(parse.GetValue(adapter)!, parse.GetValue(rank), parse.GetValue(outDir)!);
            Console.WriteLine($"wrote rank-{parse.GetValue(rank)} adapter to {written}");
            if (parse.GetValue(json)) JsonOutput.Write(new { out_dir = written, rank = parse.GetValue(rank) });
            return 0;
        }));
        return command;
    }
}
