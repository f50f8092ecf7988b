using System.CommandLine;
using System.Diagnostics;
using PeftSharp.Cli.Demo;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Privacy;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench dp</c>: on the demo's base model and its lowercase task, (1) the time of one DP-SGD gradient
/// (per-example gradients, clipping, noise) against one ordinary LoRA gradient on the same batch, alternated and
/// compared by medians; (2) held-out loss after the same number of steps without DP and with DP-SGD at several noise
/// multipliers, with the ε each spends.
/// </summary>
public static class BenchDpCommand
{
    public static Command Create()
    {
        var steps = new Option<int>("--steps") { Description = "optimizer steps per training run", DefaultValueFactory = _ => 40 };
        var repeats = new Option<int>("--repeats") { Description = "timed gradient computations of each kind", DefaultValueFactory = _ => 5 };
        var sigmas = new Option<string>("--noise-multipliers") { Description = "comma-separated σ for the loss/ε table", DefaultValueFactory = _ => "0.6,1.0,2.0" };
        var batch = new Option<int>("--batch-size") { Description = "(expected) examples per step", DefaultValueFactory = _ => 8 };
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 64 };
        var cache = new Option<string>("--cache") { Description = "where the demo's base model is (trained there if missing)", DefaultValueFactory = _ => Path.Combine(".cache", "demo") };
        var json = CliOptions.Json();
        var command = new Command("dp", "DP-SGD step time vs a plain LoRA step, and held-out loss vs ε") { steps, repeats, sigmas, batch, seqLen, cache, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(steps), parse.GetValue(repeats),
            parse.GetValue(sigmas)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(double.Parse).ToArray(),
            parse.GetValue(batch), parse.GetValue(seqLen), parse.GetValue(cache)!, parse.GetValue(json))));
        return command;
    }

    const ulong Seed = 1234;
    const double Delta = 1e-5, MaxGradNorm = 1.0, LearningRate = 5e-3;

    static int Run(int steps, int repeats, double[] sigmas, int batchSize, int seqLen, string cacheDir, bool json)
    {
        var corpus = DemoCorpus.Load();
        var baseModel = DemoBaseModel.EnsureTrained(cacheDir, corpus, DemoScale.Full, Seed);
        var tokenizer = ModelTokenizer.Load(baseModel.Folder);
        using var model = ModelLoader.Load(baseModel.Folder, ScalarType.BFloat16);
        var train = TextData.Pack(tokenizer, [corpus.WhisperTrain], seqLen).Examples;
        var validation = TextData.Pack(tokenizer, [corpus.WhisperValidation[..Math.Min(20_000, corpus.WhisperValidation.Length)]], seqLen).Examples;
        long pad = tokenizer.EosTokenId ?? 0;
        var config = new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = TargetModules.AllLinear };
        var lora = LoraModel.Create(model, config, "timing", seed: (long)Seed);
        var trainable = lora.TrainableParameters();
        model.train();

        // (1) Step time on one fixed batch: plain = forward + token-mean loss backward; DP = forward + per-example
        // loss backward + per-example gradients + clipping + noise. Alternated, medians.
        var examples = train.Take(batchSize).ToList();
        var plainTimes = new List<double>();
        var dpTimes = new List<double>();
        using (var tap = new PerExampleGradients(lora, trainable))
        {
            for (int i = 0; i <= repeats; i++)
            {
                foreach (var (_, p) in trainable) p.grad = null;
                foreach (var layer in lora.LinearLayers.Values) layer.GradientTap = null;
                var clock = Stopwatch.StartNew();
                using (var scope = NewDisposeScope())
                {
                    var b = Batch.Collate(examples, pad);
                    var hidden = model.Hidden(b.InputIds, null, b.ModelMask);
                    CausalLMLoss.Backward(model, hidden, b.Labels, 1.0 / b.LabelledTokens);
                }
                double plain = clock.Elapsed.TotalSeconds;
                foreach (var (_, p) in trainable) p.grad = null;
                foreach (var layer in lora.LinearLayers.Values) layer.GradientTap = tap;
                clock.Restart();
                using (var scope = NewDisposeScope())
                {
                    var b = Batch.Collate(examples, pad);
                    var hidden = model.Hidden(b.InputIds, null, b.ModelMask);
                    PerExampleLoss.Backward(model, hidden, b.Labels);
                    var sums = new Dictionary<Parameter, Tensor>(ReferenceEqualityComparer.Instance);
                    PerExampleClipping.ClipAndAccumulate(tap.Collect(), MaxGradNorm, sums);
                    using (no_grad())
                        foreach (var (_, p) in trainable)
                            p.grad = sums[p].add(randn(p.shape).mul_(MaxGradNorm)).div_(batchSize);
                    foreach (var s in sums.Values) s.Dispose();
                }
                double dp = clock.Elapsed.TotalSeconds;
                if (i == 0) continue;   // warm-up
                plainTimes.Add(plain);
                dpTimes.Add(dp);
            }
        }
        foreach (var (_, p) in trainable) p.grad = null;
        double baseLoss;
        using (lora.DisableAdapters())
        {
            using var evaluator = new Trainer(model, ParameterGroups.DecayAndNoDecay(trainable, LearningRate, 0), new TrainingOptions { MaxSteps = 1, BatchSize = batchSize }, train, validation, pad);
            baseLoss = evaluator.Evaluate();
        }
        lora.SetTrainable("timing", false);
        double plainMedian = BenchCommand.Median(plainTimes), dpMedian = BenchCommand.Median(dpTimes);
        Console.Error.WriteLine($"gradient time on {batchSize} × {seqLen} tokens: plain LoRA {plainMedian * 1000:F0} ms, DP-SGD {dpMedian * 1000:F0} ms ({dpMedian / plainMedian:F2}×)");

        // (2) Held-out loss after `steps` steps: no DP, then DP-SGD at each σ (same q, C, learning rate, seed).
        var rows = new List<(string Run, double? Sigma, double? Epsilon, double EvalLoss)>();
        double Train(string name, double? sigma)
        {
            lora.AddAdapter(name, config, seed: (long)Seed);
            lora.SetAdapter(name);
            var parameters = lora.TrainableParameters();
            var options = new TrainingOptions { MaxSteps = steps, BatchSize = batchSize, Seed = Seed, Schedule = ScheduleKind.Constant, MaxGradNorm = 1.0 };
            using var dp = sigma is double s
                ? new DpSgd(model, lora, parameters, train, pad, new DpSgdOptions { NoiseMultiplier = s, MaxGradNorm = MaxGradNorm, Delta = Delta, ExpectedBatchSize = batchSize, MicroBatchSize = batchSize, Seed = Seed })
                : null;
            using var trainer = new Trainer(model, ParameterGroups.DecayAndNoDecay(parameters, LearningRate, 0), options, train, validation, pad) { Gradients = dp };
            var result = trainer.Train();
            double? eps = dp?.Spent(result.Steps).Epsilon;
            rows.Add((name, sigma, eps, result.LastEvalLoss ?? double.NaN));
            Console.Error.WriteLine($"  {name}: held-out loss {result.LastEvalLoss:F4}{(eps is double e ? $", ε = {e:F2}" : "")}");
            lora.SetTrainable(name, false);
            return result.LastEvalLoss ?? double.NaN;
        }
        Train("lora", null);
        foreach (var s in sigmas) Train($"dp_sigma_{s}".Replace('.', '_'), s);

        double q = (double)batchSize / train.Count;
        Console.WriteLine($"DP-SGD gradient / plain LoRA gradient: {dpMedian / plainMedian:F2}× (medians of {repeats}, {batchSize} × {seqLen} tokens; target ≤ 2×)");
        Console.WriteLine($"Held-out loss after {steps} steps (q = {q:G3}, C = {MaxGradNorm}, δ = {Delta}, lr {LearningRate}); base model {baseLoss:F4}:");
        Console.WriteLine("| run | σ | ε | held-out loss |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var r in rows)
            Console.WriteLine($"| {r.Run} | {(r.Sigma is double s ? s.ToString("G3") : "—")} | {(r.Epsilon is double e ? e.ToString("F2") : "∞ (no DP)")} | {r.EvalLoss:F4} |");
        if (json)
            JsonOutput.Write(new
            {
                plain_seconds = plainMedian, dp_seconds = dpMedian, ratio = dpMedian / plainMedian, batch_size = batchSize, seq_len = seqLen,
                steps, sample_rate = q, delta = Delta, base_loss = baseLoss,
                runs = rows.Select(r => new { run = r.Run, noise_multiplier = r.Sigma, epsilon = r.Epsilon, eval_loss = r.EvalLoss }).ToArray(),
            });
        return 0;
    }
}
