using System.CommandLine;
using PeftSharp.Data;

namespace PeftSharp.Cli.Commands.Data;

/// <summary><c>peftsharp data stats FILE</c>: records per format, lengths, and what <c>data clean</c> would remove and why. Writes nothing.</summary>
public static class DataStatsCommand
{
    public static Command Create()
    {
        var file = DataCommand.FileArgument();
        var threshold = DataCommand.ThresholdOption();
        var noNear = DataCommand.NoNearOption();
        var maxChars = DataCommand.MaxCharsOption();
        var json = CliOptions.Json();
        var command = new Command("stats", "records per format, lengths, duplicates and bad records (writes nothing)") { file, threshold, noNear, maxChars, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string path = parse.GetValue(file)!;
            var records = DataCleaner.Read(path);
            var result = DataCleaner.Analyze(records, DataCommand.Options(parse.GetValue(threshold), parse.GetValue(noNear), parse.GetValue(maxChars)));
            var prompt = records.Where(r => r.Format is not null).Select(r => r.Prompt.Length).Order().ToArray();
            var reply = records.Where(r => r.Format is not null).Select(r => r.Reply.Length).Order().ToArray();
            Console.WriteLine($"{path}: {result.Records} records; formats: {string.Join(", ", result.Formats.Select(kv => $"{kv.Key} {kv.Value}"))}");
            if (prompt.Length > 0)
            {
                Console.WriteLine($"prompt characters: min {prompt[0]}, median {prompt[prompt.Length / 2]}, max {prompt[^1]}");
                Console.WriteLine($"reply characters:  min {reply[0]}, median {reply[reply.Length / 2]}, max {reply[^1]}");
            }
            Console.WriteLine($"clean would keep {result.Kept.Count} and remove {result.Removed.Count}:");
            DataCommand.PrintCounts(result);
            if (parse.GetValue(json))
                JsonOutput.Write(new
                {
                    file = path,
                    records = result.Records,
                    formats = result.Formats.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value),
                    main_format = result.MainFormat?.ToString(),
                    prompt_chars = prompt.Length == 0 ? null : new { min = prompt[0], median = prompt[prompt.Length / 2], max = prompt[^1] },
                    reply_chars = reply.Length == 0 ? null : new { min = reply[0], median = reply[reply.Length / 2], max = reply[^1] },
                    would_keep = result.Kept.Count,
                    would_remove = result.CountsByReason,
                });
            return 0;
        }));
        return command;
    }
}
