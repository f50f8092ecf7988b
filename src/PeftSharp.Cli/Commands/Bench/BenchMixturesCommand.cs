using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Mixtures;
using PeftSharp.Tuners.Mixtures.MixLora;
using PeftSharp.Tuners.Mixtures.MoLora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench mixtures</c>: (1) training step time of MixLoRA (top-k of E) and MoLoRA (E experts) against plain
/// LoRA at the same rank on the same projections, one randomly initialised model, ratios measured in one run;
/// (2) load balance: the coefficient of variation of the per-expert token share of a MixLoRA adapter after a short
/// training without and with the load-balancing loss, measured on held-out tokens.
/// </summary>
public static class BenchMixturesCommand
{
    public static Command Create()
    {
        var config = BenchCommand.ConfigOption();
        var dtype = CliOptions.DType();
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 4 }.AtLeast(1);
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 512 }.AtLeast(2);
        var steps = new Option<int>("--steps") { Description = "measured steps per method (after 1 warm-up step); the median is reported", DefaultValueFactory = _ => 3 }.AtLeast(1);
        var rank = new Option<int>("--r") { DefaultValueFactory = _ => 8 }.AtLeast(1);
        var experts = new Option<int>("--num-experts") { DefaultValueFactory = _ => 8 }.AtLeast(1);
        var topK = new Option<int>("--top-k") { DefaultValueFactory = _ => 2 }.AtLeast(1);
        var balanceSteps = new Option<int>("--balance-steps") { Description = "training steps of each load-balance run (0 skips part 2)", DefaultValueFactory = _ => 30 }.AtLeast(0);
        var coef = new Option<double>("--aux-loss-coef") { Description = "router_aux_loss_coef of the run with the loss", DefaultValueFactory = _ => 0.01 }.Above(0);
        var json = CliOptions.Json();
        var command = new Command("mixtures", "MixLoRA / MoLoRA step time against LoRA, and MixLoRA load balance with and without the aux loss")
            { config, dtype, batch, seqLen, steps, rank, experts, topK, balanceSteps, coef, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(config)!, parse.GetValue(dtype)!, parse.GetValue(batch), parse.GetValue(seqLen),
            parse.GetValue(steps), parse.GetValue(rank), parse.GetValue(experts), parse.GetValue(topK), parse.GetValue(balanceSteps), parse.GetValue(coef), parse.GetValue(json))));
        return command;
    }

    static int Run(string configPath, string dtypeName, int batch, int seqLen, int steps, int r, int experts, int topK, int balanceSteps, double coef, bool json)
    {
        var dtype = CliOptions.ParseDType(dtypeName);
        var config = ModelConfig.Load(configPath);
        if (seqLen > config.ContextLength) throw new PeftSharpException($"--seq-len {seqLen} exceeds the model's context ({config.ContextLength})");
        if (topK > experts) throw new PeftSharpException($"--top-k {topK}: must be at most --num-experts ({experts})");
        using var model = ModelLoader.Create(config, dtype);
        model.InitializeWeights(0);
        var (attention, feedForward) = MixLoraModel.ProjectionNames(config);
        var targets = TargetModules.FromNames(attention.Concat(feedForward).Distinct());
        Console.Error.WriteLine($"bench mixtures: {config.ModelType} {config.Layers} layers, batch {batch}×{seqLen}, rank {r}, targets {targets}");

        var random = new Random(0);
        List<TrainingExample> Data(int count) => Enumerable.Range(0, count).Select(_ =>
        {
            var ids = Enumerable.Range(0, seqLen).Select(_ => random.Next(config.VocabSize)).ToArray();
            return new TrainingExample(ids, ids);
        }).ToList();

        // Part 1: step times, methods interleaved round by round so that machine noise hits them alike.
        var setups = new (string Name, Func<PeftConfig> Config)[]
        {
            ("lora", () => new LoraConfig { R = r, LoraAlpha = 2 * r, TargetModules = targets }),
            ("mixlora", () => new MixLoraConfig { R = r, LoraAlpha = 2 * r, LoraDropout = 0, TargetModules = targets, NumExperts = experts, TopK = topK }),
            ("molora", () => new MoLoraConfig { R = r, LoraAlpha = 2 * r, TargetModules = targets, NumExperts = experts }),
        };
        var stepTimes = setups.ToDictionary(s => s.Name, _ => new List<double>());
        var cpuTimes = setups.ToDictionary(s => s.Name, _ => new List<double>());
        var parameters = new Dictionary<string, long>();
        var data = Data(batch);
        for (int round = 0; round <= steps; round++)
            foreach (var (name, make) in setups)
            {
                var peft = new PeftModel(model);
                peft.AddAdapter("default", make(), seed: 1);
                peft.SetAdapter("default");
                parameters[name] = peft.TrainableParameters().Sum(p => p.Param.numel());
                var mix = peft.Get<MixLoraModel>();
                if (mix is not null) mix.Log.RecordForLoss = true;
                var (seconds, cpu) = TimeSteps(model, peft, data, batch, mix);
                if (round > 0) // round 0 warms up
                {
                    stepTimes[name].Add(seconds);
                    cpuTimes[name].Add(cpu);
                }
                Console.Error.WriteLine($"  round {round} {name}: {seconds:F2} s/step wall, {cpu:F2} s CPU");
                peft.Unload();
            }
        var median = stepTimes.ToDictionary(kv => kv.Key, kv => BenchCommand.Median(kv.Value));
        var medianCpu = cpuTimes.ToDictionary(kv => kv.Key, kv => BenchCommand.Median(kv.Value));
        double mixRatio = median["mixlora"] / median["lora"], moRatio = median["molora"] / median["lora"];
        double mixCpuRatio = medianCpu["mixlora"] / medianCpu["lora"], moCpuRatio = medianCpu["molora"] / medianCpu["lora"];
        // On a shared machine the fastest round is the least disturbed one; CPU time leaves out other processes' turns.
        var best = stepTimes.ToDictionary(kv => kv.Key, kv => kv.Value.Min());
        double mixBest = best["mixlora"] / best["lora"], moBest = best["molora"] / best["lora"];
        Console.WriteLine($"step CPU time (median) vs LoRA r{r}: MixLoRA {mixCpuRatio:F2}×, MoLoRA {moCpuRatio:F2}×; fastest round: MixLoRA {mixBest:F2}×, MoLoRA {moBest:F2}×");
        Console.WriteLine($"step time vs LoRA r{r}: MixLoRA top-{topK} of {experts} {mixRatio:F2}× (target ≤ 1.8), MoLoRA {experts} experts {moRatio:F2}× (target ≤ 1.5); " +
                          $"trainable params LoRA {parameters["lora"]:N0}, MixLoRA {parameters["mixlora"]:N0}, MoLoRA {parameters["molora"]:N0}");

        // Part 2: load balance after a short training, without and with the aux loss, on the same held-out tokens.
        double? cvWithout = null, cvWith = null;
        if (balanceSteps > 0)
        {
            var train = Data(batch * balanceSteps);
            var heldOut = Data(batch);
            cvWithout = BalanceRun(model, train, heldOut, batch, r, targets, experts, topK, 0, balanceSteps);
            cvWith = BalanceRun(model, train, heldOut, batch, r, targets, experts, topK, coef, balanceSteps);
            Console.WriteLine($"load balance after {balanceSteps} steps (CV of per-expert token share, mean over layers; 0 = even): " +
                              $"without aux loss {cvWithout:F3}, with aux loss (coef {coef}) {cvWith:F3}");
        }
        if (json)
            JsonOutput.Write(new
            {
                mixlora_step_ratio = mixRatio, molora_step_ratio = moRatio, mixlora_cpu_ratio = mixCpuRatio, molora_cpu_ratio = moCpuRatio,
                mixlora_best_ratio = mixBest, molora_best_ratio = moBest,
                lora_step_seconds = median["lora"], mixlora_step_seconds = median["mixlora"], molora_step_seconds = median["molora"],
                trainable_params = parameters,
                cv_without_aux_loss = cvWithout, cv_with_aux_loss = cvWith, aux_loss_coef = coef, balance_steps = balanceSteps,
                batch_size = batch, seq_len = seqLen, r, num_experts = experts, top_k = topK, dtype = ModelLoader.DTypeName(dtype),
            });
        return 0;
    }

    /// <summary>Wall and process CPU seconds of one optimizer step of the active adapter (forward, backward incl. the aux loss, AdamW).</summary>
    static (double Wall, double Cpu) TimeSteps(CausalLM model, PeftModel peft, List<TrainingExample> data, int batch, MixLoraModel? mix)
    {
        var options = new TrainingOptions { MaxSteps = 1, BatchSize = batch, Shuffle = false, Schedule = ScheduleKind.Constant, LoggingSteps = 1000 };
        var groups = ParameterGroups.DecayAndNoDecay(peft.TrainableParameters(), 1e-4, 0.0);
        using var trainer = new Trainer(model, groups, options, data)
        {
            BeforeStep = _ => mix?.Log.Clear(),
            ExtraLoss = mix is null ? null : () => { var aux = mix.WeightedAuxiliaryLoss(); mix.Log.Clear(); return aux; },
        };
        var process = System.Diagnostics.Process.GetCurrentProcess();
        process.Refresh();
        var cpu0 = process.TotalProcessorTime;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        trainer.Train();
        double wall = clock.Elapsed.TotalSeconds;
        process.Refresh();
        return (wall, (process.TotalProcessorTime - cpu0).TotalSeconds);
    }

    static double BalanceRun(CausalLM model, List<TrainingExample> train, List<TrainingExample> heldOut, int batch, int r, TargetModules targets,
        int experts, int topK, double coef, int balanceSteps)
    {
        var peft = new PeftModel(model);
        peft.AddAdapter("default", new MixLoraConfig
        {
            R = r, LoraAlpha = 2 * r, LoraDropout = 0, TargetModules = targets, NumExperts = experts, TopK = topK,
            RouterAuxLossCoef = coef, RouterLoss = coef > 0,
        }, seed: 2);
        peft.SetAdapter("default");
        var mix = peft.Get<MixLoraModel>()!;
        mix.Log.RecordForLoss = coef > 0;
        var options = new TrainingOptions { MaxSteps = balanceSteps, BatchSize = batch, Shuffle = false, Schedule = ScheduleKind.Constant, LoggingSteps = 1000 };
        var groups = ParameterGroups.DecayAndNoDecay(peft.TrainableParameters(), 1e-3, 0.0);
        using (var trainer = new Trainer(model, groups, options, train)
        {
            BeforeStep = _ => mix.Log.Clear(),
            ExtraLoss = () => { var aux = mix.WeightedAuxiliaryLoss(); mix.Log.Clear(); return aux; },
        })
            trainer.Train();
        mix.Log.RecordForLoss = false;
        var stats = new RouterStatistics();
        mix.Log.Statistics = stats;
        model.eval();
        using (no_grad())
            foreach (var example in heldOut)
            {
                using var scope = NewDisposeScope();
                model.Forward(tensor(example.InputIds.Select(i => (long)i).ToArray(), device: model.Device).unsqueeze(0));
            }
        mix.Log.Statistics = null;
        double cv = stats.MeanCoefficientOfVariation;
        Console.Error.WriteLine($"  balance run, aux coef {coef}: CV per layer {string.Join(", ", stats.Routers.Select(x => x.CoefficientOfVariation.ToString("F3")))}");
        peft.Unload();
        return cv;
    }
}
