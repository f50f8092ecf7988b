using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using PeftSharp.Data;

namespace PeftSharp.Cli.Commands.Data;

/// <summary>
/// <c>peftsharp data clean FILE --output OUT</c>: writes the kept records (lines unchanged) to a new file and, with
/// <c>--removed</c>, every removed line with its reason. Counts by reason on stdout. The input is never modified.
/// </summary>
public static class DataCleanCommand
{
    static readonly JsonSerializerOptions Relaxed = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static Command Create()
    {
        var file = DataCommand.FileArgument();
        var output = new Option<string>("--output") { Description = "where to write the kept records (JSONL)", Required = true };
        var removedPath = new Option<string?>("--removed") { Description = "also write the removed lines with line number and reason (JSONL)" };
        var threshold = DataCommand.ThresholdOption();
        var noNear = DataCommand.NoNearOption();
        var maxChars = DataCommand.MaxCharsOption();
        var json = CliOptions.Json();
        var command = new Command("clean", "remove exact and near duplicates, empty, over-long, reply-less and mixed-format records")
        { file, output, removedPath, threshold, noNear, maxChars, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string path = parse.GetValue(file)!, outPath = parse.GetValue(output)!;
            string? removedOut = parse.GetValue(removedPath);
            DataCleaner.CheckNotInput(path, outPath, "--output");
            if (removedOut is not null)
            {
                DataCleaner.CheckNotInput(path, removedOut, "--removed");
                if (Path.GetFullPath(removedOut) == Path.GetFullPath(outPath)) throw new PeftSharpException("--removed: must differ from --output");
            }
            var options = DataCommand.Options(parse.GetValue(threshold), parse.GetValue(noNear), parse.GetValue(maxChars));
            var result = DataCleaner.Analyze(DataCleaner.Read(path), options);
            if (result.Kept.Count == 0) throw new PeftSharpException($"{path}: every record would be removed ({string.Join(", ", result.CountsByReason.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value}"))}); nothing written");
            DataCleaner.WriteLines(outPath, result.Kept.Select(r => r.Raw));
            if (removedOut is not null)
                DataCleaner.WriteLines(removedOut, result.Removed.Select(r => JsonSerializer.Serialize(new
                {
                    line = r.Line, reason = r.Reason, duplicate_of = r.DuplicateOf, detail = r.Detail, record = r.Raw,
                }, Relaxed)));
            Console.WriteLine($"{path}: kept {result.Kept.Count} of {result.Records} records in {outPath}; removed {result.Removed.Count}:");
            DataCommand.PrintCounts(result);
            if (parse.GetValue(json))
                JsonOutput.Write(new { input = path, output = outPath, records = result.Records, kept = result.Kept.Count, removed = result.CountsByReason });
            return 0;
        }));
        return command;
    }
}
