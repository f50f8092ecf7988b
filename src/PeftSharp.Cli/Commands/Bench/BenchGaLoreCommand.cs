using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Benchmarks;
using PeftSharp.Cli.Demo;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Training.GaLore;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench galore</c>: full fine-tuning with AdamW, full fine-tuning with GaLore, and LoRA, side by side.
/// <list type="bullet">
/// <item>memory: optimizer-state bytes and peak RSS of a few training steps on a randomly initialised model built from
/// --config, each method in its own child process (peak RSS is per process);</item>
/// <item>quality: held-out NLL on the demo's UPPERCASE task after the same number of steps from the demo's base model.</item>
/// </list>
/// </summary>
public static class BenchGaLoreCommand
{
    /// <summary>AdamW full, GaLore on attention and MLP (the default targets), GaLore also on the token embedding, LoRA.</summary>
    static readonly string[] Methods = ["adamw", "galore", "galore+wte", "lora"];

    public static Command Create()
    {
        var config = BenchCommand.ConfigOption();
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 2 }.AtLeast(1);
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 256 }.AtLeast(2);
        var memSteps = new Option<int>("--memory-steps") { Description = "training steps per method for the memory part (0: optimizer state only, counted on the meta device, no peak RSS)", DefaultValueFactory = _ => 2 }.AtLeast(0);
        var rank = new Option<int>("--galore-rank") { DefaultValueFactory = _ => 128 }.AtLeast(1);
        var demoBase = new Option<string>("--demo-base") { Description = "the demo's trained base model folder (quality part; skipped when missing)", DefaultValueFactory = _ => Path.Combine(".cache", "demo", "base-full-v1") };
        var qualitySteps = new Option<int>("--quality-steps") { Description = "training steps per method on the demo task (0: skip)", DefaultValueFactory = _ => 30 }.AtLeast(0);
        var child = new Option<string?>("--child") { Hidden = true };
        var json = CliOptions.Json();
        var command = new Command("galore", "GaLore vs AdamW full fine-tuning vs LoRA: optimizer state, peak memory, loss after N steps")
            { config, batch, seqLen, memSteps, rank, demoBase, qualitySteps, child, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var o = new Settings(parse.GetValue(config)!, parse.GetValue(batch), parse.GetValue(seqLen), parse.GetValue(memSteps), parse.GetValue(rank));
            if (parse.GetValue(child) is { } method) return Child(o, method);
            return Run(o, parse.GetValue(demoBase)!, parse.GetValue(qualitySteps), parse.GetValue(json));
        }));
        return command;
    }

    sealed record Settings(string Config, int Batch, int SeqLen, int Steps, int Rank);

    sealed record MemoryResult(string Method, long StateBytes, long PeakRssBytes, double StepSeconds, long TrainableParameters);

    static int Run(Settings o, string demoBase, int qualitySteps, bool json)
    {
        var memory = new List<MemoryResult>();
        foreach (var method in Methods)
        {
            Console.Error.WriteLine($"bench galore memory: {method}{(o.Steps > 0 ? " (child process)" : " (state only, meta device)")}...");
            memory.Add(o.Steps > 0 ? RunChild(o, method) : StateOnly(o, method));
        }
        var adamw = memory[0];
        var quality = new List<(string Method, double Nll)>();
        double baseNll = double.NaN;
        if (qualitySteps > 0 && File.Exists(Path.Combine(demoBase, "config.json")))
            (baseNll, quality) = Quality(demoBase, qualitySteps, o.Rank);
        else if (qualitySteps > 0) Console.Error.WriteLine($"bench galore: no demo base at {demoBase} (run ./peftsharp demo once); quality part skipped");

        Console.WriteLine($"{ModelConfig.Load(o.Config).ModelType} (random weights), batch {o.Batch}×{o.SeqLen}, float32, GaLore rank {o.Rank}; shared machine");
        Console.WriteLine($"{"method",-14} {"optimizer state",16} {"× AdamW",8} {"peak RSS",10} {"s/step",8}");
        foreach (var m in memory)
            Console.WriteLine($"{m.Method,-14} {m.StateBytes / 1e6,13:F1} MB {(double)m.StateBytes / adamw.StateBytes,8:F3} {m.PeakRssBytes / 1e9,7:F2} GB {m.StepSeconds,8:F2}");
        if (quality.Count > 0)
        {
            Console.WriteLine($"demo UPPERCASE task, held-out NLL after {qualitySteps} steps (base {baseNll:F3}):");
            foreach (var (m, nll) in quality) Console.WriteLine($"  {m,-14} {nll:F3}");
        }
        if (json)
            JsonOutput.Write(new
            {
                batch_size = o.Batch, seq_len = o.SeqLen, galore_rank = o.Rank,
                memory = memory.Select(m => new
                {
                    method = m.Method, optimizer_state_bytes = m.StateBytes, state_ratio_to_adamw = (double)m.StateBytes / adamw.StateBytes,
                    peak_rss_bytes = m.PeakRssBytes, peak_ratio_to_adamw = adamw.PeakRssBytes > 0 ? (double)m.PeakRssBytes / adamw.PeakRssBytes : (double?)null,
                    step_seconds = double.IsNaN(m.StepSeconds) ? (double?)null : m.StepSeconds,
                    trainable_parameters = m.TrainableParameters,
                }),
                quality = quality.Count == 0 ? null : new { steps = qualitySteps, base_nll = baseNll, nll = quality.ToDictionary(q => q.Method, q => q.Nll) },
            });
        return 0;
    }

    static MemoryResult RunChild(Settings o, string method)
    {
        string host = Environment.ProcessPath ?? throw new PeftSharpException("cannot find this program's path to start the child process");
        var info = new ProcessStartInfo(host) { UseShellExecute = false, RedirectStandardOutput = true };
        if (Path.GetFileNameWithoutExtension(host) == "dotnet") info.ArgumentList.Add(typeof(BenchGaLoreCommand).Assembly.Location);
        foreach (var a in new[] { "bench", "galore", "--child", method, "--config", o.Config, "--batch-size", $"{o.Batch}", "--seq-len", $"{o.SeqLen}",
                                  "--memory-steps", $"{o.Steps}", "--galore-rank", $"{o.Rank}" })
            info.ArgumentList.Add(a);
        using var process = Process.Start(info) ?? throw new PeftSharpException("could not start the child process");
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new PeftSharpException($"bench galore: the {method} child process failed (exit {process.ExitCode})");
        return JsonSerializer.Deserialize<MemoryResult>(output.Trim().Split('\n')[^1])!;
    }

    /// <summary>Optimizer state of one method on a model built on the meta device: exact byte counts, no memory used, no training.</summary>
    static MemoryResult StateOnly(Settings o, string method)
    {
        using var model = ModelLoader.CreateMeta(ModelConfig.Load(o.Config));
        var (groups, optimizer, trainable) = Setup(model, method, o.Rank, 1e-4);
        using var used = optimizer ?? new AdamWOptimizer(groups);
        return new MemoryResult(method, used.StateBytes, 0, double.NaN, trainable.Sum(p => p.Param.numel()));
    }

    static (List<ParameterGroup>, ITrainingOptimizer?, IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Param)>) Setup(CausalLM model, string method, int rank, double lr)
    {
        IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Param)> trainable;
        if (method == "lora") trainable = LoraModel.Create(model, new LoraConfig { R = 8, LoraAlpha = 16 }, seed: 1).TrainableParameters();
        else
        {
            foreach (var p in model.parameters()) p.requires_grad = true;
            trainable = ParameterGroups.Trainable(model);
        }
        var groups = ParameterGroups.DecayAndNoDecay(trainable, lr, 0.0);
        var galore = new GaLoreOptions { Rank = rank, TargetModules = method == "galore+wte" ? ["attn", "mlp", "wte", "embed_tokens"] : ["attn", "mlp"] };
        ITrainingOptimizer? optimizer = method.StartsWith("galore", StringComparison.Ordinal) ? new GaLoreAdamW(groups, galore.Select(trainable), galore) : null;
        return (groups, optimizer, trainable);
    }

    /// <summary>The child: one method, Steps steps on random tokens; one JSON line on stdout.</summary>
    static int Child(Settings o, string method)
    {
        var config = ModelConfig.Load(o.Config);
        using var model = ModelLoader.Create(config, ScalarType.Float32);
        model.InitializeWeights(0);
        var (groups, optimizer, trainable) = Setup(model, method, o.Rank, 1e-4);
        var random = new Random(0);
        var data = Enumerable.Range(0, o.Batch * o.Steps).Select(_ =>
        {
            var ids = Enumerable.Range(0, o.SeqLen).Select(_ => random.Next(config.VocabSize)).ToArray();
            return new TrainingExample(ids, ids);
        }).ToList();
        var options = new TrainingOptions { MaxSteps = o.Steps, BatchSize = o.Batch, Shuffle = false, Schedule = ScheduleKind.Constant, LoggingSteps = 1000 };
        var clock = Stopwatch.StartNew();
        long stateBytes;
        using (var trainer = new Trainer(model, groups, options, data, optimizer: optimizer))
        {
            trainer.Train();
            stateBytes = trainer.Optimizer.StateBytes;
        }
        Console.WriteLine(JsonSerializer.Serialize(new MemoryResult(method, stateBytes, ResourceUsage.PeakRssBytes(), clock.Elapsed.TotalSeconds / o.Steps,
            trainable.Sum(p => p.Param.numel()))));
        return 0;
    }

    /// <summary>Held-out NLL on the demo's UPPERCASE text after the same steps of each method from the demo base.</summary>
    static (double Base, List<(string, double)> Results) Quality(string demoBase, int steps, int rank)
    {
        var corpus = DemoCorpus.Load();
        var tokenizer = ModelTokenizer.Load(demoBase);
        const int context = 128, batch = 4, evalChars = 20_000;
        var train = TextData.Pack(tokenizer, [corpus.ShoutTrain], context).Examples;
        var evalIds = tokenizer.Encode(corpus.ShoutValidation[..Math.Min(evalChars, corpus.ShoutValidation.Length)]);
        double Nll(CausalLM m) { m.eval(); using var _ = no_grad(); return Scoring.MeanNll(m, evalIds).MeanNll; }
        double baseNll;
        using (var m = ModelLoader.Load(demoBase)) baseNll = Nll(m);
        var results = new List<(string, double)>();
        // Learning rates: AdamW full 3e-4; GaLore 1e-3 (its scale 0.25 makes the matrices' step 2.5e-4); LoRA 2e-3.
        foreach (var (method, lr) in new[] { ("adamw", 3e-4), ("galore", 1e-3), ("lora", 2e-3) })
        {
            Console.Error.WriteLine($"bench galore quality: {method}, {steps} steps of {batch}×{context}...");
            using var model = ModelLoader.Load(demoBase);
            var (groups, optimizer, _) = Setup(model, method, rank, lr);
            var options = new TrainingOptions { MaxSteps = steps, BatchSize = batch, Schedule = ScheduleKind.Constant, LoggingSteps = 1000, Seed = 7 };
            using (var trainer = new Trainer(model, groups, options, train, optimizer: optimizer)) trainer.Train();
            results.Add((method == "adamw" ? "adamw full" : method == "galore" ? "galore full" : "lora r=8", Nll(model)));
        }
        return (baseNll, results);
    }
}
