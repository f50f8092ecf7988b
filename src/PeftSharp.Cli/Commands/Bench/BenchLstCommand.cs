using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Benchmarks;
using PeftSharp.Cli.Demo;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.SideTuning;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench lst</c>: ladder side tuning against LoRA.
/// <list type="bullet">
/// <item>memory: peak RSS of a few training steps at --batch-size × --seq-len on a randomly initialised model built from
/// --config, each method in its own child process (peak RSS is per process); also the RSS before the first step (model,
/// adapter and data loaded), so that what training itself adds can be compared too; and the mean step time;</item>
/// <item>quality: held-out NLL on the demo's UPPERCASE task after the same number of steps from the demo's base model,
/// with the step time of each method in the same run.</item>
/// </list>
/// </summary>
public static class BenchLstCommand
{
    static readonly string[] Methods = ["lora", "lst"];

    public static Command Create()
    {
        var config = BenchCommand.ConfigOption();
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 4 }.AtLeast(1);
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 512 }.AtLeast(2);
        var memSteps = new Option<int>("--memory-steps") { Description = "training steps per method for the memory part (0: skip it)", DefaultValueFactory = _ => 2 }.AtLeast(0);
        var factor = new Option<int>("--side-reduction-factor") { Description = "LST reduction_factor", DefaultValueFactory = _ => 8 }.AtLeast(1);
        var demoBase = new Option<string>("--demo-base") { Description = "the demo's trained base model folder (quality part; skipped when missing)", DefaultValueFactory = _ => Path.Combine(".cache", "demo", "base-full-v1") };
        var qualitySteps = new Option<int>("--quality-steps") { Description = "training steps per method on the demo task (0: skip)", DefaultValueFactory = _ => 30 }.AtLeast(0);
        var child = new Option<string?>("--child") { Hidden = true };
        var json = CliOptions.Json();
        var command = new Command("lst", "ladder side tuning vs LoRA: training peak memory, step time, held-out loss")
            { config, batch, seqLen, memSteps, factor, demoBase, qualitySteps, child, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var o = new Settings(parse.GetValue(config)!, parse.GetValue(batch), parse.GetValue(seqLen), parse.GetValue(memSteps), parse.GetValue(factor));
            if (parse.GetValue(child) is { } method) return Child(o, method);
            return Run(o, parse.GetValue(demoBase)!, parse.GetValue(qualitySteps), parse.GetValue(json));
        }));
        return command;
    }

    sealed record Settings(string Config, int Batch, int SeqLen, int Steps, int Factor);

    sealed record MemoryResult(string Method, long SetupRssBytes, long PeakRssBytes, double StepSeconds, long TrainableParameters);

    sealed record QualityResult(string Method, double Nll, double StepSeconds, long TrainableParameters);

    static int Run(Settings o, string demoBase, int qualitySteps, bool json)
    {
        var memory = new List<MemoryResult>();
        if (o.Steps > 0)
            foreach (var method in Methods)
            {
                Console.Error.WriteLine($"bench lst memory: {method} (child process, {o.Steps} steps of {o.Batch}×{o.SeqLen})...");
                memory.Add(RunChild(o, method));
            }
        var quality = new List<QualityResult>();
        double baseNll = double.NaN;
        if (qualitySteps > 0 && File.Exists(Path.Combine(demoBase, "config.json")))
            (baseNll, quality) = Quality(demoBase, qualitySteps, o.Factor);
        else if (qualitySteps > 0) Console.Error.WriteLine($"bench lst: no demo base at {demoBase} (run ./peftsharp demo once); quality part skipped");

        if (memory.Count > 0)
        {
            var lora = memory[0];
            Console.WriteLine($"{ModelConfig.Load(o.Config).ModelType} (random weights), batch {o.Batch}×{o.SeqLen}, float32, LST r={o.Factor}, LoRA r=8 (default targets); shared machine");
            Console.WriteLine($"{"method",-8} {"trainable",11} {"RSS before",11} {"peak RSS",10} {"× LoRA",7} {"added",10} {"× LoRA",7} {"s/step",8} {"× LoRA",7}");
            foreach (var m in memory)
                Console.WriteLine($"{m.Method,-8} {m.TrainableParameters,11:N0} {m.SetupRssBytes / 1e9,8:F2} GB {m.PeakRssBytes / 1e9,7:F2} GB {(double)m.PeakRssBytes / lora.PeakRssBytes,7:F3} " +
                                  $"{(m.PeakRssBytes - m.SetupRssBytes) / 1e9,7:F2} GB {(double)(m.PeakRssBytes - m.SetupRssBytes) / (lora.PeakRssBytes - lora.SetupRssBytes),7:F3} {m.StepSeconds,8:F2} {m.StepSeconds / lora.StepSeconds,7:F2}");
        }
        if (quality.Count > 0)
        {
            Console.WriteLine($"demo UPPERCASE task, held-out NLL after {qualitySteps} steps (base {baseNll:F3}):");
            foreach (var q in quality) Console.WriteLine($"  {q.Method,-10} NLL {q.Nll:F3}   {q.StepSeconds:F2} s/step   {q.TrainableParameters:N0} trainable");
        }
        if (json)
            JsonOutput.Write(new
            {
                batch_size = o.Batch, seq_len = o.SeqLen, reduction_factor = o.Factor,
                memory = memory.Count == 0 ? null : memory.Select(m => new
                {
                    method = m.Method, setup_rss_bytes = m.SetupRssBytes, peak_rss_bytes = m.PeakRssBytes,
                    peak_ratio_to_lora = (double)m.PeakRssBytes / memory[0].PeakRssBytes,
                    added_ratio_to_lora = (double)(m.PeakRssBytes - m.SetupRssBytes) / (memory[0].PeakRssBytes - memory[0].SetupRssBytes),
                    step_seconds = m.StepSeconds, step_ratio_to_lora = m.StepSeconds / memory[0].StepSeconds, trainable_parameters = m.TrainableParameters,
                }),
                quality = quality.Count == 0 ? null : new
                {
                    steps = qualitySteps, base_nll = baseNll,
                    methods = quality.Select(q => new { method = q.Method, nll = q.Nll, step_seconds = q.StepSeconds, trainable_parameters = q.TrainableParameters }),
                },
            });
        return 0;
    }

    static MemoryResult RunChild(Settings o, string method)
    {
        string host = Environment.ProcessPath ?? throw new PeftSharpException("cannot find this program's path to start the child process");
        var info = new ProcessStartInfo(host) { UseShellExecute = false, RedirectStandardOutput = true };
        if (Path.GetFileNameWithoutExtension(host) == "dotnet") info.ArgumentList.Add(typeof(BenchLstCommand).Assembly.Location);
        foreach (var a in new[] { "bench", "lst", "--child", method, "--config", o.Config, "--batch-size", $"{o.Batch}", "--seq-len", $"{o.SeqLen}",
                                  "--memory-steps", $"{o.Steps}", "--side-reduction-factor", $"{o.Factor}" })
            info.ArgumentList.Add(a);
        using var process = Process.Start(info) ?? throw new PeftSharpException("could not start the child process");
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new PeftSharpException($"bench lst: the {method} child process failed (exit {process.ExitCode})");
        return JsonSerializer.Deserialize<MemoryResult>(output.Trim().Split('\n')[^1])!;
    }

    /// <summary>The adapter of one method on <paramref name="model"/>: its trainable parameters.</summary>
    static IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Param)> Attach(CausalLM model, string method, int factor)
    {
        if (method == "lora") return LoraModel.Create(model, new LoraConfig { R = 8, LoraAlpha = 16 }, seed: 1).TrainableParameters();
        var lst = SideTuningModel.Create(model, new LstConfig { ReductionFactor = factor }, seed: 1);
        return lst.AdapterParameters().Where(p => p.Param.requires_grad).Select(p => (p.Name, p.Param)).ToList();
    }

    /// <summary>The child: one method, Steps steps on random tokens; one JSON line on stdout.</summary>
    static int Child(Settings o, string method)
    {
        var config = ModelConfig.Load(o.Config);
        using var model = ModelLoader.Create(config, ScalarType.Float32);
        model.InitializeWeights(0);
        var trainable = Attach(model, method, o.Factor);
        var groups = ParameterGroups.DecayAndNoDecay(trainable, 1e-4, 0.0);
        var random = new Random(0);
        var data = Enumerable.Range(0, o.Batch * o.Steps).Select(_ =>
        {
            var ids = Enumerable.Range(0, o.SeqLen).Select(_ => random.Next(config.VocabSize)).ToArray();
            return new TrainingExample(ids, ids);
        }).ToList();
        var options = new TrainingOptions { MaxSteps = o.Steps, BatchSize = o.Batch, Shuffle = false, Schedule = ScheduleKind.Constant, LoggingSteps = 1000 };
        long setup = ResourceUsage.RssBytes();
        var clock = Stopwatch.StartNew();
        using (var trainer = new Trainer(model, groups, options, data)) trainer.Train();
        Console.WriteLine(JsonSerializer.Serialize(new MemoryResult(method, setup, ResourceUsage.PeakRssBytes(), clock.Elapsed.TotalSeconds / o.Steps,
            trainable.Sum(p => p.Param.numel()))));
        return 0;
    }

    /// <summary>Held-out NLL on the demo's UPPERCASE text after the same steps of each method from the demo base.</summary>
    static (double Base, List<QualityResult> Results) Quality(string demoBase, int steps, int factor)
    {
        var corpus = DemoCorpus.Load();
        var tokenizer = ModelTokenizer.Load(demoBase);
        const int context = 128, batch = 4, evalChars = 20_000;
        var train = TextData.Pack(tokenizer, [corpus.ShoutTrain], context).Examples;
        var evalIds = tokenizer.Encode(corpus.ShoutValidation[..Math.Min(evalChars, corpus.ShoutValidation.Length)]);
        double Nll(CausalLM m) { m.eval(); using var _ = no_grad(); return Scoring.MeanNll(m, evalIds).MeanNll; }
        double baseNll;
        using (var m = ModelLoader.Load(demoBase)) baseNll = Nll(m);
        var results = new List<QualityResult>();
        // Learning rates: LoRA 2e-3 (as bench galore); LST 3e-3 (a fresh side network; LST's paper uses 3e-3 for T5).
        foreach (var (method, lr) in new[] { ("lora", 2e-3), ("lst", 3e-3) })
        {
            Console.Error.WriteLine($"bench lst quality: {method}, {steps} steps of {batch}×{context}...");
            using var model = ModelLoader.Load(demoBase);
            var trainable = Attach(model, method, factor);
            var groups = ParameterGroups.DecayAndNoDecay(trainable, lr, 0.0);
            var options = new TrainingOptions { MaxSteps = steps, BatchSize = batch, Schedule = ScheduleKind.Constant, LoggingSteps = 1000, Seed = 7 };
            var clock = Stopwatch.StartNew();
            using (var trainer = new Trainer(model, groups, options, train)) trainer.Train();
            double seconds = clock.Elapsed.TotalSeconds / steps;
            results.Add(new QualityResult(method == "lora" ? "lora r=8" : $"lst r={factor}", Nll(model), seconds, trainable.Sum(p => p.Param.numel())));
        }
        return (baseNll, results);
    }
}
