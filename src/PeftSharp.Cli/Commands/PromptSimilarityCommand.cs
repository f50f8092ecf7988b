using System.CommandLine;
using PeftSharp.Composition;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp prompt-similarity</c>: ranks candidate source prompts for a target task by the similarity of their
/// soft prompts to a prompt trained on the target task (SPoT's prompt-based task embeddings).
/// </summary>
public static class PromptSimilarityCommand
{
    public static Command Create()
    {
        var sources = new Option<string[]>("--source") { Description = "a source task's soft-prompt adapter folder; repeat for each candidate", Required = true, AllowMultipleArgumentsPerToken = false };
        var target = new Option<string>("--target") { Description = "a soft-prompt adapter folder trained (briefly) on the target task", Required = true };
        var metric = new Option<string>("--metric") { Description = "mean (cosine of the mean-pooled prompts, SPoT's default), per-token (mean cosine over all token pairs) or flat (cosine of the flattened prompts)", DefaultValueFactory = _ => "mean" };
        var json = CliOptions.Json();
        var command = new Command("prompt-similarity", "rank source prompts for a target task by prompt similarity (SPoT)") { sources, target, metric, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(sources)!, parse.GetValue(target)!, parse.GetValue(metric)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string[] sources, string target, string metricName, bool json)
    {
        var metric = metricName.ToLowerInvariant() switch
        {
            "mean" => PromptSimilarityMetric.Mean,
            "per-token" => PromptSimilarityMetric.PerToken,
            "flat" => PromptSimilarityMetric.Flat,
            _ => throw new PeftSharpException($"--metric: expected mean, per-token or flat, got \"{metricName}\""),
        };
        foreach (var dir in sources.Append(target))
            if (!Directory.Exists(dir)) throw new PeftSharpException($"{(dir == target ? "--target" : "--source")} {dir}: folder not found");
        var ranking = PromptTransfer.Rank(sources, target, metric);
        Console.WriteLine($"{"rank",4}  {"similarity",10}  source (target {target}, metric {metricName})");
        for (int i = 0; i < ranking.Count; i++) Console.WriteLine($"{i + 1,4}  {ranking[i].Similarity,10:F4}  {ranking[i].Source}");
        if (json)
            JsonOutput.Write(new { target, metric = metricName.ToLowerInvariant(), ranking = ranking.Select(c => new { source = c.Source, similarity = c.Similarity }).ToArray() });
        return 0;
    }
}
