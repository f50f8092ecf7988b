using System.CommandLine;
using System.Diagnostics;
using PeftSharp.Evaluation;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench evaluate</c>: loglik-mode items per second on a synthetic multiple-choice task, PeftSharp's way
/// (one forward over the prompt, its KV cache shared by the choices, choices batched) against the naive way (one full
/// forward per choice), interleaved in one run; also checks that both give the same scores.
/// </summary>
public static class BenchEvaluateCommand
{
    public static Command Create()
    {
        var config = BenchCommand.ConfigOption();
        var dtype = CliOptions.DType();
        var items = new Option<int>("--items") { DefaultValueFactory = _ => 8, Description = "items per repeat" };
        var choices = new Option<int>("--choices") { DefaultValueFactory = _ => 4, Description = "answer options per item" };
        var promptLen = new Option<int>("--prompt-len") { DefaultValueFactory = _ => 128, Description = "prompt tokens" };
        var choiceLen = new Option<int>("--choice-len") { DefaultValueFactory = _ => 24, Description = "tokens of the longest choice (the others are shorter)" };
        var repeats = new Option<int>("--repeats") { DefaultValueFactory = _ => 3, Description = "interleaved repeats per way" };
        var json = CliOptions.Json();
        var command = new Command("evaluate", "loglik items/s: shared prompt KV cache vs one full forward per choice")
        { config, dtype, items, choices, promptLen, choiceLen, repeats, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(config)!, parse.GetValue(dtype)!, parse.GetValue(items), parse.GetValue(choices),
            parse.GetValue(promptLen), parse.GetValue(choiceLen), parse.GetValue(repeats), parse.GetValue(json))));
        return command;
    }

    static int Run(string configPath, string dtypeName, int itemCount, int choiceCount, int promptLen, int choiceLen, int repeats, bool json)
    {
        if (itemCount < 1 || choiceCount < 1 || promptLen < 1 || choiceLen < 1 || repeats < 1)
            throw new PeftSharpException("--items, --choices, --prompt-len, --choice-len and --repeats must be at least 1");
        var dtype = CliOptions.ParseDType(dtypeName);
        var config = ModelConfig.Load(configPath);
        if (promptLen + choiceLen > config.ContextLength)
            throw new PeftSharpException($"--prompt-len + --choice-len ({promptLen + choiceLen}) exceeds the model's context ({config.ContextLength})");
        using var model = ModelLoader.Create(config, dtype);
        model.InitializeWeights(0);
        model.eval();
        var scorer = new LoglikScorer(model, null);
        var random = new Random(7);
        var data = Enumerable.Range(0, itemCount).Select(_ =>
        (
            Prompt: Enumerable.Range(0, promptLen).Select(_ => (long)random.Next(config.VocabSize)).ToArray(),
            // Choice lengths from half the longest up to the longest, as real answer options vary.
            Choices: Enumerable.Range(0, choiceCount).Select(c => Enumerable.Range(0, Math.Max(1, choiceLen - c * choiceLen / (2 * choiceCount)))
                .Select(_ => (long)random.Next(config.VocabSize)).ToArray()).ToArray()
        )).ToList();
        Console.Error.WriteLine($"bench evaluate: {config.ModelType}, {ModelLoader.DTypeName(dtype)}, {itemCount} items × {choiceCount} choices, prompt {promptLen} tokens, choices ≤ {choiceLen} tokens, {get_num_threads()} threads");

        var times = new Dictionary<string, List<double>> { ["shared"] = [], ["naive"] = [] };
        // CPU seconds of this process as well: on a shared, busy machine wall time mostly measures waiting.
        var cpu = new Dictionary<string, List<double>> { ["shared"] = [], ["naive"] = [] };
        var process = Process.GetCurrentProcess();
        double maxDiff = 0;
        for (int rep = 0; rep <= repeats; rep++) // rep 0 warms up
        {
            var scores = new Dictionary<string, List<double[]>>();
            foreach (var way in new[] { "shared", "naive" })
            {
                process.Refresh();
                var cpuStart = process.TotalProcessorTime;
                var clock = Stopwatch.StartNew();
                scores[way] = data.Select(d => way == "shared" ? scorer.ScoreIds(d.Prompt, d.Choices) : scorer.ScoreIdsNaive(d.Prompt, d.Choices)).ToList();
                double seconds = clock.Elapsed.TotalSeconds;
                process.Refresh();
                double cpuSeconds = (process.TotalProcessorTime - cpuStart).TotalSeconds;
                if (rep == 0) continue;
                times[way].Add(seconds);
                cpu[way].Add(cpuSeconds);
                Console.Error.WriteLine($"  {way,-6} {itemCount / seconds,8:F2} items/s   {itemCount / cpuSeconds,8:F3} items per CPU-second");
            }
            for (int i = 0; i < itemCount; i++)
                for (int c = 0; c < choiceCount; c++)
                    maxDiff = Math.Max(maxDiff, Math.Abs(scores["shared"][i][c] - scores["naive"][i][c]));
        }
        double shared = itemCount / BenchCommand.Median(times["shared"]), naive = itemCount / BenchCommand.Median(times["naive"]);
        double sharedCpu = itemCount / BenchCommand.Median(cpu["shared"]), naiveCpu = itemCount / BenchCommand.Median(cpu["naive"]);
        Console.WriteLine($"items/s: shared prompt cache {shared:F2}, one forward per choice {naive:F2}, speedup {shared / naive:F2}x; " +
                          $"per CPU-second: {sharedCpu:F3} vs {naiveCpu:F3}, {sharedCpu / naiveCpu:F2}x; max |Δ loglik| {maxDiff:E2}");
        if (json)
            JsonOutput.Write(new { items_per_s_shared = shared, items_per_s_naive = naive, speedup = shared / naive,
                                   items_per_cpu_s_shared = sharedCpu, items_per_cpu_s_naive = naiveCpu, speedup_cpu = sharedCpu / naiveCpu,
                                   max_abs_loglik_diff = maxDiff,
                                   items = itemCount, choices = choiceCount, prompt_len = promptLen, choice_len = choiceLen, dtype = ModelLoader.DTypeName(dtype) });
        return 0;
    }
}
