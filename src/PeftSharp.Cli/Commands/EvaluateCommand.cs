using System.CommandLine;
using System.Diagnostics;
using PeftSharp.Cli.Evaluation;
using PeftSharp.Evaluation;
using PeftSharp.Models;
using PeftSharp.Tokenization;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp evaluate</c>: accuracy on a benchmark (LLM-Adapters' commonsense and math sets, story cloze, RACE, SQuAD,
/// lm-evaluation-harness-style multiple choice) in generate or loglik mode, or of given generations. Each <c>--adapter</c>
/// is evaluated on its own and the results are compared side by side. See docs/evaluation.md.
/// </summary>
public static class EvaluateCommand
{
    public static Command Create()
    {
        var task = new Option<string>("--task") { Description = "task name (LLM-Adapters' folder names: boolq, gsm8k, AQuA, ...; story_cloze, race, squad, multiple_choice) or a suite: commonsense, math", Required = true };
        var data = new Option<string>("--data") { Description = "test file (JSON list or JSON Lines); for a suite, a folder laid out as LLM-Adapters' dataset/ (<task>/test.json)", Required = true };
        var model = new Option<string?>("--model") { Description = "Hugging Face model folder (not needed with --predictions)" };
        var adapters = new Option<string[]>("--adapter")
        {
            Description = "PEFT adapter folder; repeat to evaluate several, each on its own, side by side",
            DefaultValueFactory = _ => [],
        };
        var mode = new Option<string>("--mode") { Description = "generate (LLM-Adapters' prompt and answer extraction, greedy) or loglik (lm-evaluation-harness acc / acc_norm)", DefaultValueFactory = _ => "generate" };
        var limit = new Option<int?>("--limit") { Description = "evaluate only the first N items of each task" };
        var batchSize = new Option<int>("--batch-size") { Description = "prompts generated together (left-padded)", DefaultValueFactory = _ => 8 };
        var maxNew = new Option<int?>("--max-new-tokens") { Description = "generation length (default: 32 for commonsense and reading tasks, 256 for math, as LLM-Adapters)" };
        var output = new Option<string?>("--output") { Description = "write one JSON object per item to this JSONL file" };
        var predictions = new Option<string?>("--predictions") { Description = "score these generations ({\"generation\": ...} per line, in data order) instead of running a model" };
        var report = new Option<string?>("--report") { Description = "write a markdown report to this .md file and a bar chart beside it (.png)" };
        var dtype = CliOptions.DType();
        var device = CliOptions.DeviceOption();
        var json = CliOptions.Json();
        var command = new Command("evaluate", "accuracy on a benchmark: LLM-Adapters' commonsense and math sets, story cloze, RACE, SQuAD")
        {
            task, data, model, adapters, mode, limit, batchSize, maxNew, output, predictions, report, dtype, device, json,
        };
        command.SetAction(parse => CliErrors.Run(() => Run(new Settings(
            parse.GetValue(task)!, parse.GetValue(data)!, parse.GetValue(model), parse.GetValue(adapters)!, parse.GetValue(mode)!,
            parse.GetValue(limit), parse.GetValue(batchSize), parse.GetValue(maxNew), parse.GetValue(output), parse.GetValue(predictions),
            parse.GetValue(report), parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(json)))));
        return command;
    }

    sealed record Settings(string Task, string Data, string? Model, string[] Adapters, string Mode, int? Limit, int BatchSize, int? MaxNewTokens,
                           string? Output, string? Predictions, string? Report, string DType, string Device, bool Json);

    static int Run(Settings s)
    {
        if (s.Mode is not ("generate" or "loglik")) throw new PeftSharpException($"--mode: expected generate or loglik, got \"{s.Mode}\"");
        if (s.Limit is < 1) throw new PeftSharpException($"--limit: expected at least 1, got {s.Limit}");
        if (s.BatchSize < 1) throw new PeftSharpException($"--batch-size: expected at least 1, got {s.BatchSize}");
        if (s.MaxNewTokens is < 1) throw new PeftSharpException($"--max-new-tokens: expected at least 1, got {s.MaxNewTokens}");
        var tasks = ResolveTasks(s, out var missing);
        if (s.Mode == "loglik")
            foreach (var (t, _) in tasks)
                if (!t.HasChoices) throw new PeftSharpException($"--mode loglik: task {t.Name} has no answer options to score; use --mode generate");
        if (missing.Count > 0) Console.Error.WriteLine($"note: {s.Task}: no test.json for {string.Join(", ", missing)} in {s.Data}; skipped");
        var loaded = tasks.Select(t => (t.Task, Items: EvalData.Load(t.File, t.Task, s.Limit))).ToList();

        var runs = new List<(string? Adapter, EvalSummary Summary, List<ItemResult> Items)>();
        if (s.Predictions is not null)
        {
            if (loaded.Count != 1) throw new PeftSharpException("--predictions: give one task, not a suite");
            if (s.Model is not null || s.Adapters.Length > 0) throw new PeftSharpException("--predictions: scores given generations; drop --model and --adapter");
            var (task, items) = loaded[0];
            var results = Evaluator.ScoreGenerations(task, items, EvalOutput.ReadGenerations(s.Predictions));
            runs.Add((null, Evaluator.Summarize(task.Name, "generate", results), results));
        }
        else
        {
            if (s.Model is null) throw new PeftSharpException("--model: required (or give --predictions to score generations without a model)");
            ModelConfig.Load(s.Model);
            var tokenizer = ModelTokenizer.Load(s.Model);
            var dtype = CliOptions.ParseDType(s.DType);
            var device = CliOptions.ParseDevice(s.Device);
            string?[] adapterRuns = s.Adapters.Length == 0 ? [null] : [.. s.Adapters];
            foreach (var adapter in adapterRuns)
            {
                using var session = ModelSession.Load(s.Model, adapter is null ? [] : [adapter], dtype, device);
                session.Model.eval();
                foreach (var (task, items) in loaded)
                {
                    string label = adapter is null ? task.Name : $"{AdapterLabel(adapter)} {task.Name}";
                    var progress = new EvalProgress(label);
                    List<ItemResult> results;
                    if (s.Mode == "loglik")
                    {
                        var scorer = new LoglikScorer(session.Model, tokenizer);
                        results = Evaluator.RunLoglik(task, items, scorer.Score, progress.Report);
                    }
                    else
                    {
                        var generator = new BatchGenerator(session.Model, tokenizer);
                        int maxNew = s.MaxNewTokens ?? task.DefaultMaxNewTokens;
                        results = Evaluator.RunGenerate(task, items, s.BatchSize, prompts => generator.Generate(prompts, maxNew), progress.Report);
                    }
                    progress.Finish();
                    runs.Add((adapter, Evaluator.Summarize(task.Name, s.Mode, results), results));
                }
            }
        }

        bool several = runs.Count > 1;
        if (s.Output is not null)
            EvalOutput.WriteJsonl(s.Output, runs.SelectMany(r => r.Items.Select(i => (several && r.Adapter is not null ? AdapterLabel(r.Adapter) : null,
                                                                                       several ? r.Summary.Task : null, i))));
        var rows = runs.Select(r => (Adapter: r.Adapter is null ? "base" : AdapterLabel(r.Adapter), r.Summary)).ToList();
        EvalReport.PrintTable(rows);
        if (s.Report is not null) EvalReport.Write(s.Report, rows, s.Model, s.Mode);
        if (s.Json)
        {
            if (!several) JsonOutput.Write(SummaryJson(runs[0].Summary));
            else JsonOutput.Write(new { results = rows.Select(r => new Dictionary<string, object?>(SummaryJson(r.Summary)) { ["adapter"] = r.Adapter }).ToList() });
        }
        return 0;
    }

    static Dictionary<string, object?> SummaryJson(EvalSummary s)
    {
        var d = new Dictionary<string, object?> { ["task"] = s.Task, ["n"] = s.N, ["correct"] = s.Correct, ["accuracy"] = s.Accuracy };
        if (s.AccNorm is double norm) d["acc_norm"] = norm;
        if (s.ExactMatch is double em) d["exact_match"] = em;
        if (s.F1 is double f1) d["f1"] = f1;
        return d;
    }

    static string AdapterLabel(string dir) => Path.GetFileName(Path.TrimEndingDirectorySeparator(dir)) is { Length: > 0 } name ? name : dir;

    /// <summary>The task(s) and their files: one task and its file, or a suite's tasks found as &lt;folder&gt;/&lt;task&gt;/test.json.</summary>
    static List<(EvalTask Task, string File)> ResolveTasks(Settings s, out List<string> missing)
    {
        missing = [];
        if (!EvalTasks.IsSuite(s.Task))
        {
            var task = EvalTasks.Get(s.Task);
            if (Directory.Exists(s.Data))
            {
                string inFolder = Path.Combine(s.Data, task.Name, "test.json");
                if (!File.Exists(inFolder)) throw new PeftSharpException($"--data {s.Data}: a folder without {task.Name}/test.json; give the test file");
                return [(task, inFolder)];
            }
            if (!File.Exists(s.Data)) throw new PeftSharpException($"--data {s.Data}: file not found");
            return [(task, s.Data)];
        }
        string suite = s.Task.ToLowerInvariant();
        if (!Directory.Exists(s.Data)) throw new PeftSharpException($"--data {s.Data}: --task {suite} needs a folder laid out as LLM-Adapters' dataset/ (<task>/test.json)");
        var found = new List<(EvalTask, string)>();
        foreach (var task in EvalTasks.Suite(suite))
        {
            string file = Path.Combine(s.Data, task.Name, "test.json");
            if (File.Exists(file)) found.Add((task, file));
            else missing.Add(task.Name);
        }
        if (found.Count == 0) throw new PeftSharpException($"--data {s.Data}: no <task>/test.json for any {suite} task ({string.Join(", ", missing)})");
        return found;
    }
}

/// <summary>One stderr line redrawn per batch: a bar, items done, items/s and the running accuracy.</summary>
sealed class EvalProgress(string label)
{
    readonly Stopwatch clock = Stopwatch.StartNew();

    public void Report(int done, int total, int correct)
    {
        const int width = 24;
        int filled = total == 0 ? width : (int)((long)done * width / total);
        double rate = done / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
        Console.Error.Write($"\r{label} [{new string('#', filled)}{new string('.', width - filled)}] {done}/{total}  {rate:F2} items/s  accuracy {correct / (double)Math.Max(done, 1):P1}   ");
    }

    public void Finish() => Console.Error.WriteLine();
}
