using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Benchmarks;
using PeftSharp.Cli.Commands.Bench.Tuners;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench tuners</c>: the tuning methods side by side, each part measured in one run.
/// <list type="bullet">
/// <item>latency: per-token decode after a prompt, at two batch sizes, for the base model, merged LoRA, merged (IA)³,
/// Houlsby and parallel adapters (as the LoRA paper's Table 1), as ratios to the base measured interleaved;</item>
/// <item>train: seconds per optimizer step and peak memory of each method, each in its own child process (peak RSS
/// is per process);</item>
/// <item>quality: held-out perplexity on the demo's two tasks (lowercase, UPPERCASE) after the same number of steps,
/// at a similar trainable-parameter budget, with a table and a plot.</item>
/// </list>
/// </summary>
public static class BenchTunersCommand
{
    public static Command Create()
    {
        var parts = new Option<string>("--parts") { Description = "comma-separated: latency, train, quality", DefaultValueFactory = _ => "latency,train,quality" };
        var config = new Option<string>("--config") { Description = "config.json of the model for latency and train (random weights)", DefaultValueFactory = _ => Path.Combine("bench", "configs", "gpt2-124m.json") };
        var demoBase = new Option<string>("--demo-base") { Description = "the demo's trained base model folder (quality)", DefaultValueFactory = _ => Path.Combine(".cache", "demo", "base-full-v1") };
        var dtype = CliOptions.DType();
        var batches = new Option<string>("--batch-sizes") { Description = "latency batch sizes", DefaultValueFactory = _ => "1,8" };
        var promptLen = new Option<int>("--prompt-len") { DefaultValueFactory = _ => 128 };
        var newTokens = new Option<int>("--new-tokens") { Description = "decoded tokens per repeat", DefaultValueFactory = _ => 16 };
        var repeats = new Option<int>("--repeats") { Description = "interleaved latency repeats (after one warm-up)", DefaultValueFactory = _ => 3 };
        var trainBatch = new Option<int>("--train-batch") { DefaultValueFactory = _ => 2 };
        var trainSeq = new Option<int>("--train-seq-len") { DefaultValueFactory = _ => 128 };
        var trainSteps = new Option<int>("--train-steps") { Description = "measured steps (after one warm-up)", DefaultValueFactory = _ => 3 };
        var qualitySteps = new Option<int>("--quality-steps") { DefaultValueFactory = _ => 40 };
        var outDir = new Option<string>("--out") { DefaultValueFactory = _ => Path.Combine("runs", "bench-tuners") };
        var child = new Option<string?>("--train-child") { Hidden = true };
        var json = CliOptions.Json();
        var command = new Command("tuners", "LoRA, (IA)³, Houlsby and parallel adapters: decode latency, training step and memory, held-out perplexity")
            { parts, config, demoBase, dtype, batches, promptLen, newTokens, repeats, trainBatch, trainSeq, trainSteps, qualitySteps, outDir, child, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var o = new Settings(parse.GetValue(config)!, parse.GetValue(demoBase)!, CliOptions.ParseDType(parse.GetValue(dtype)!),
                parse.GetValue(batches)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(ParseBatch).ToArray(),
                parse.GetValue(promptLen), parse.GetValue(newTokens), parse.GetValue(repeats), parse.GetValue(trainBatch), parse.GetValue(trainSeq),
                parse.GetValue(trainSteps), parse.GetValue(qualitySteps), parse.GetValue(outDir)!);
            if (parse.GetValue(child) is { } method) return TrainChild(o, method);
            return Run(o, parse.GetValue(parts)!, parse.GetValue(json));
        }));
        return command;
    }

    sealed record Settings(string Config, string DemoBase, ScalarType DType, int[] Batches, int PromptLen, int NewTokens, int Repeats,
        int TrainBatch, int TrainSeq, int TrainSteps, int QualitySteps, string OutDir);

    static int ParseBatch(string s) => int.TryParse(s, out int b) && b > 0 ? b : throw new PeftSharpException($"--batch-sizes: \"{s}\" is not a positive integer");

    // The adapters' usual sizes on the bench model: LoRA r=8 on PEFT's default targets, AdapterHub's preset reduction factors.
    const int LoraRank = 8;
    const double HoulsbyReduction = 16, ParallelReduction = 2;

    static int Run(Settings o, string partsText, bool json)
    {
        var parts = partsText.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToHashSet();
        foreach (var p in parts)
            if (p is not ("latency" or "train" or "quality")) throw new PeftSharpException($"--parts: unknown part \"{p}\" (expected latency, train, quality)");
        Directory.CreateDirectory(o.OutDir);
        var result = new Dictionary<string, object?>();
        if (parts.Contains("latency")) result["latency"] = Latency(o);
        if (parts.Contains("train")) result["train"] = Train(o);
        if (parts.Contains("quality")) result["quality"] = TunerQuality.Run(o.DemoBase, o.QualitySteps, o.OutDir);
        result["threads"] = get_num_threads();
        if (json) JsonOutput.Write(result);
        return 0;
    }

    // ------------------------------------------------------------------ latency

    static object Latency(Settings o)
    {
        var config = ModelConfig.Load(o.Config);
        if (o.PromptLen + o.NewTokens > config.ContextLength)
            throw new PeftSharpException($"--prompt-len + --new-tokens ({o.PromptLen + o.NewTokens}) exceeds the model's context ({config.ContextLength})");
        using var model = ModelLoader.Create(config, o.DType);
        model.InitializeWeights(0);
        model.eval();
        // Every method is attached once; each variant runs with the others disabled.
        var setups = new Dictionary<string, TunerSetup>();
        var missing = new Dictionary<string, string>();
        foreach (var method in TunerSetup.Methods)
        {
            try { setups[method] = TunerSetup.Attach(model, method, LoraRank, null, HoulsbyReduction, ParallelReduction, seed: 1, randomInit: true); }
            catch (TunerUnavailableException ex) { missing[method] = ex.Message; }
        }
        var variants = new List<(string Name, TunerSetup? Setup, bool Merged)> { ("base", null, false) };
        if (setups.TryGetValue("lora", out var l)) variants.Add(("lora_merged", l, true));
        if (setups.TryGetValue("ia3", out var i)) variants.Add(("ia3_merged", i, true));
        if (setups.TryGetValue("houlsby", out var h)) variants.Add(("houlsby", h, false));
        if (setups.TryGetValue("parallel", out var p)) variants.Add(("parallel", p, false));
        Console.Error.WriteLine($"bench tuners latency: {config.ModelType}, {ModelLoader.DTypeName(o.DType)}, prompt {o.PromptLen}, {o.NewTokens} new tokens, " +
                                $"{get_num_threads()} threads; trainable: {string.Join(", ", setups.Select(kv => $"{kv.Key} {kv.Value.TrainableCount:N0}"))}");
        var perBatch = new Dictionary<string, object>();
        using var _ = no_grad();
        foreach (int batch in o.Batches)
        {
            var prompt = randint(0, config.VocabSize, [batch, o.PromptLen], dtype: ScalarType.Int64);
            var decode = variants.ToDictionary(v => v.Name, _ => new List<double>());
            for (int rep = 0; rep <= o.Repeats; rep++) // rep 0 warms up
                foreach (var (name, setup, merged) in variants)
                {
                    foreach (var s in setups.Values) s.SetEnabled(s == setup);
                    if (merged) setup!.Merge!();
                    var (_, d) = BenchInferCommand.Measure(model, prompt, o.NewTokens);
                    if (merged) setup!.Unmerge!();
                    if (rep == 0) continue;
                    decode[name].Add(d);
                    Console.Error.WriteLine($"  batch {batch} {name,-12} decode {d * 1e3,8:F2} ms/token");
                }
            var median = decode.ToDictionary(kv => kv.Key, kv => BenchCommand.Median(kv.Value));
            double b = median["base"];
            Console.WriteLine($"batch {batch}: decode ms/token " + string.Join(", ", median.Select(kv => $"{kv.Key} {kv.Value * 1e3:F2} ({kv.Value / b:F3}x)")));
            perBatch[batch.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new
            {
                decode_ms_per_token = median.ToDictionary(kv => kv.Key, kv => kv.Value * 1e3),
                ratio_to_base = median.ToDictionary(kv => kv.Key, kv => kv.Value / b),
            };
        }
        foreach (var (m, why) in missing) Console.WriteLine($"{m}: not measured ({why})");
        return new
        {
            dtype = ModelLoader.DTypeName(o.DType),
            prompt_len = o.PromptLen,
            new_tokens = o.NewTokens,
            trainable_parameters = setups.ToDictionary(kv => kv.Key, kv => kv.Value.TrainableCount),
            batches = perBatch,
            not_measured = missing,
        };
    }

    // ------------------------------------------------------------------ training step and memory

    static object Train(Settings o)
    {
        var rows = new Dictionary<string, object?>();
        foreach (var method in TunerSetup.Methods)
        {
            Console.Error.WriteLine($"bench tuners train: {method} (child process)...");
            var (code, lastLine) = RunChild(o, method);
            if (code != 0 || lastLine is null)
            {
                rows[method] = null;
                Console.WriteLine($"{method}: not measured ({lastLine ?? "no output"})");
                continue;
            }
            using var doc = JsonDocument.Parse(lastLine);
            var r = doc.RootElement;
            if (r.TryGetProperty("unavailable", out var why))
            {
                rows[method] = null;
                Console.WriteLine($"{method}: not measured ({why.GetString()})");
                continue;
            }
            rows[method] = JsonSerializer.Deserialize<Dictionary<string, object>>(lastLine);
            Console.WriteLine($"{method}: {r.GetProperty("step_seconds").GetDouble():F3} s/step, peak RSS {r.GetProperty("peak_rss_bytes").GetInt64() / 1e9:F2} GB, " +
                              $"{r.GetProperty("trainable").GetInt64():N0} trainable");
        }
        return new { batch = o.TrainBatch, seq_len = o.TrainSeq, steps = o.TrainSteps, dtype = ModelLoader.DTypeName(o.DType), methods = rows };
    }

    static (int Code, string? LastLine) RunChild(Settings o, string method)
    {
        string host = Environment.ProcessPath ?? throw new PeftSharpException("cannot find this program's path to start the training child process");
        var info = new ProcessStartInfo(host) { UseShellExecute = false, RedirectStandardOutput = true };
        if (Path.GetFileNameWithoutExtension(host) == "dotnet") info.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        foreach (var a in new[] { "bench", "tuners", "--train-child", method, "--config", o.Config, "--dtype", ModelLoader.DTypeName(o.DType),
                     "--train-batch", o.TrainBatch.ToString(), "--train-seq-len", o.TrainSeq.ToString(), "--train-steps", o.TrainSteps.ToString() })
            info.ArgumentList.Add(a);
        using var process = Process.Start(info) ?? throw new PeftSharpException("could not start the training child process");
        string? last = null;
        while (process.StandardOutput.ReadLine() is { } line) if (line.Length > 0) last = line;
        process.WaitForExit();
        return (process.ExitCode, last);
    }

    /// <summary>The child: one method, warm-up step then measured steps; one JSON line on stdout.</summary>
    static int TrainChild(Settings o, string method)
    {
        var config = ModelConfig.Load(o.Config);
        using var model = ModelLoader.Create(config, o.DType);
        model.InitializeWeights(0);
        TunerSetup setup;
        try { setup = TunerSetup.Attach(model, method, LoraRank, null, HoulsbyReduction, ParallelReduction, seed: 1); }
        catch (TunerUnavailableException ex)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { unavailable = ex.Message }));
            return 0;
        }
        long rssBefore = ResourceUsage.RssBytes();
        var random = new Random(0);
        var data = Enumerable.Range(0, o.TrainBatch * (o.TrainSteps + 1)).Select(_ =>
        {
            var ids = Enumerable.Range(0, o.TrainSeq).Select(_ => random.Next(config.VocabSize)).ToArray();
            return new TrainingExample(ids, ids);
        }).ToList();
        var options = new TrainingOptions { MaxSteps = o.TrainSteps + 1, BatchSize = o.TrainBatch, Shuffle = false, Schedule = ScheduleKind.Constant, LoggingSteps = 1000 };
        var groups = ParameterGroups.DecayAndNoDecay(setup.Trainable, 1e-4, 0.0);
        var times = new List<double>();
        model.train();
        using (var trainer = new Trainer(model, groups, options, data) { Progress = new StepTimes(times) })
            trainer.Train();
        double stepSeconds = (times[^1] - times[0]) / o.TrainSteps;
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            method,
            step_seconds = stepSeconds,
            peak_rss_bytes = ResourceUsage.PeakRssBytes(),
            rss_after_model_bytes = rssBefore,
            trainable = setup.TrainableCount,
        }));
        return 0;
    }

    sealed class StepTimes(List<double> times) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p)
        {
            if (p.Kind == TrainingEventKind.Step) times.Add(p.Elapsed.TotalSeconds);
        }
    }
}
