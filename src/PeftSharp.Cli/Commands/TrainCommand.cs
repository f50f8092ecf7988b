using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Cli.Training;
using PeftSharp.Training;
using PeftSharp.Tuners.AdaLora;
using PeftSharp.Tuners.DyLora;
using PeftSharp.Tuners.Lora;
using TorchSharp.Modules;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp train</c>: fine-tune an adapter on a text or JSONL file and write it in PEFT's format to --out,
/// with checkpoints (resumable), metrics.jsonl and a loss plot beside it.
/// </summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var o = new Options();
        var command = new Command("train", "fine-tune a LoRA / DoRA / DyLoRA / AdaLoRA adapter; writes a PEFT adapter folder");
        foreach (var option in o.All) command.Add(option);
        o.Quantization.AddTo(command); // QLoRA: --load-in-4bit [--quant-type] [--double-quant] [--blocksize] [--compute-dtype]
        command.SetAction(parse => CliErrors.Run(() => Run(parse, o)));
        return command;
    }

    sealed class Options
    {
        public Option<string> Model = CliOptions.Model();
        public Option<string> Data = new("--data") { Description = "training data: plain text, or .jsonl (instruction/input/output, prompt/completion, messages, or text)", Required = true };
        public Option<string> Out = new("--out") { Description = "output folder: the adapter, checkpoints, metrics.jsonl, loss.png", Required = true };
        public Option<string> Method = new("--method") { Description = "lora, dora, dylora or adalora", DefaultValueFactory = _ => "lora" };
        public Option<int> R = new Option<int>("--r") { Description = "LoRA rank (DyLoRA: the largest rank)", DefaultValueFactory = _ => 8 }.AtLeast(1);
        public Option<double> Alpha = new Option<double>("--alpha") { Description = "lora_alpha", DefaultValueFactory = _ => 16 }.Above(0);
        public Option<double> Dropout = new Option<double>("--dropout") { Description = "lora_dropout", DefaultValueFactory = _ => 0.0 }.InRange(0, 1, maxInclusive: false);
        public Option<string?> Target = new("--target") { Description = "comma-separated target modules, or all-linear (default: PEFT's for the model type)" };
        public Option<bool> RsLora = new("--rslora") { Description = "scale by α/√r (rsLoRA)" };
        public Option<long?> Steps = new Option<long?>("--steps") { Description = "optimizer steps (overrides --epochs)" }.AtLeast(1);
        public Option<int> Epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => 1 }.AtLeast(1);
        public Option<double> Lr = new Option<double>("--lr") { Description = "learning rate", DefaultValueFactory = _ => 2e-4 }.Above(0);
        public Option<double> WeightDecay = new Option<double>("--weight-decay") { Description = "AdamW weight decay (matrices only)", DefaultValueFactory = _ => 0.0 }.AtLeast(0);
        public Option<string> Schedule = new("--schedule") { Description = "constant, linear or cosine", DefaultValueFactory = _ => "linear" };
        public Option<double> WarmupRatio = new Option<double>("--warmup-ratio") { DefaultValueFactory = _ => 0.03 }.InRange(0, 1);
        public Option<int> BatchSize = new Option<int>("--batch-size") { DefaultValueFactory = _ => 4 }.AtLeast(1);
        public Option<int> GradAccum = new Option<int>("--grad-accum") { DefaultValueFactory = _ => 1 }.AtLeast(1);
        public Option<int> SeqLen = new Option<int>("--seq-len") { Description = "block size for text; cut-off for instruction examples", DefaultValueFactory = _ => 512 }.AtLeast(2);
        public Option<double> MaxGradNorm = new Option<double>("--max-grad-norm") { DefaultValueFactory = _ => 1.0 }.AtLeast(0);
        public Option<string> DType = CliOptions.DType();
        public Option<string?> EvalData = new("--eval-data") { Description = "validation file (else --val-split of the training data)" };
        public Option<double> ValSplit = new Option<double>("--val-split") { Description = "fraction of the data held out for validation when no --eval-data (0: none)", DefaultValueFactory = _ => 0.0 }.InRange(0, 1, maxInclusive: false);
        public Option<long> EvalSteps = new Option<long>("--eval-steps") { Description = "evaluate every N steps (0: at the end only)", DefaultValueFactory = _ => 0 }.AtLeast(0);
        public Option<long> SaveSteps = new Option<long>("--save-steps") { Description = "checkpoint every N steps (0: at the end only)", DefaultValueFactory = _ => 0 }.AtLeast(0);
        public Option<int> Seed = new Option<int>("--seed") { DefaultValueFactory = _ => 42 }.AtLeast(0);
        public Option<double?> LoraPlusRatio = new Option<double?>("--lora-plus-ratio") { Description = "LoRA+: learning rate of B = ratio × lr" }.Above(0);
        public Option<bool> GradientCheckpointing = new("--gradient-checkpointing") { Description = "recompute activations in backward to save memory" };
        public Option<int> RankMin = new Option<int>("--rank-min") { Description = "DyLoRA: smallest rank sampled", DefaultValueFactory = _ => 1 }.AtLeast(1);
        public Option<string> RankDistribution = new("--rank-distribution") { Description = "DyLoRA: uniform or geometric", DefaultValueFactory = _ => "uniform" };
        public Option<bool> NotFrozen = new("--dylora-not-frozen") { Description = "DyLoRA: train all of the first b components (default: only component b)" };
        public Option<int> TargetR = new Option<int>("--target-r") { Description = "AdaLoRA: average rank per layer after pruning (target_r)", DefaultValueFactory = _ => 8 }.AtLeast(1);
        public Option<int> InitR = new Option<int>("--init-r") { Description = "AdaLoRA: initial rank of every layer (init_r)", DefaultValueFactory = _ => 12 }.AtLeast(1);
        public Option<int> Tinit = new Option<int>("--tinit") { Description = "AdaLoRA: steps before pruning starts", DefaultValueFactory = _ => 0 }.AtLeast(0);
        public Option<int> Tfinal = new Option<int>("--tfinal") { Description = "AdaLoRA: last steps, trained with the final ranks fixed", DefaultValueFactory = _ => 0 }.AtLeast(0);
        public Option<int> DeltaT = new Option<int>("--delta-t") { Description = "AdaLoRA: steps between two rank allocations", DefaultValueFactory = _ => 1 }.AtLeast(1);
        public Option<double> OrthRegWeight = new Option<double>("--orth-reg-weight") { Description = "AdaLoRA: weight of the orthogonal regulariser", DefaultValueFactory = _ => 0.5 }.AtLeast(0);
        public Option<bool> Resume = new("--resume") { Description = "continue from the newest checkpoint in --out" };
        public Option<string?> Config = new("--config") { Description = "JSON file with defaults for any of these options (e.g. {\"r\": 16, \"lr\": 1e-4})" };
        public Option<bool> Json = CliOptions.Json();
        public QuantizationOptions Quantization = new();
        public DpTrainOptions Dp = new();

        public Option[] All => [Model, Data, Out, Method, R, Alpha, Dropout, Target, RsLora, Steps, Epochs, Lr, WeightDecay, Schedule, WarmupRatio,
            BatchSize, GradAccum, SeqLen, MaxGradNorm, DType, EvalData, ValSplit, EvalSteps, SaveSteps, Seed, LoraPlusRatio, GradientCheckpointing,
            RankMin, RankDistribution, NotFrozen, TargetR, InitR, Tinit, Tfinal, DeltaT, OrthRegWeight, Resume, Config, Json, .. Dp.All];
    }

    static int Run(ParseResult parse, Options o)
    {
        var s = new TrainSettings(parse, parse.GetValue(o.Config));
        foreach (var unknown in s.UnknownKeys(o.All)) throw new PeftSharpException($"--config: unknown key \"{unknown}\"");
        s.ValidateAll(o.All);
        string modelDir = s.Get(o.Model), outDir = s.Get(o.Out), method = s.Get(o.Method).ToLowerInvariant();
        if (method is not ("lora" or "dora" or "dylora" or "adalora")) throw new PeftSharpException($"--method: expected lora, dora, dylora or adalora, got \"{method}\"");
        var dtype = CliOptions.ParseDType(s.Get(o.DType));
        var dpOptions = o.Dp.Enabled(s) ? o.Dp.Build(s, method, s.Get(o.GradientCheckpointing), s.Get(o.BatchSize), s.Get(o.GradAccum), (ulong)s.Get(o.Seed)) : null;
        var schedule = s.Get(o.Schedule).ToLowerInvariant() switch
        {
            "constant" => ScheduleKind.Constant,
            "linear" => ScheduleKind.Linear,
            "cosine" => ScheduleKind.Cosine,
            var other => throw new PeftSharpException($"--schedule: expected constant, linear or cosine, got \"{other}\""),
        };
        bool resume = s.Get(o.Resume);
        if (!resume && Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; use --resume to continue it, or choose a new folder");
        string? resumeFrom = resume ? Checkpoint.Latest(outDir) ?? throw new PeftSharpException($"--resume: no checkpoint-* folder in {outDir}") : null;

        ModelConfig.Load(modelDir);
        var tokenizer = ModelTokenizer.Load(modelDir);
        int seqLen = s.Get(o.SeqLen);
        string dataPath = s.Get(o.Data);
        if (!File.Exists(dataPath)) throw new PeftSharpException($"--data {dataPath}: file not found");
        var data = DataFiles.Load(dataPath, tokenizer, seqLen);
        foreach (var w in data.Warnings) Console.Error.WriteLine($"warning: {w}");
        IReadOnlyList<TrainingExample> train = data.Examples, validation = [];
        string? evalPath = s.Get(o.EvalData);
        ulong seed = (ulong)s.Get(o.Seed);
        if (evalPath is not null)
        {
            if (!File.Exists(evalPath)) throw new PeftSharpException($"--eval-data {evalPath}: file not found");
            validation = DataFiles.Load(evalPath, tokenizer, seqLen).Examples;
        }
        else if (s.Get(o.ValSplit) > 0) (train, validation) = DataFiles.Split(data.Examples, s.Get(o.ValSplit), seed);

        using var model = ModelLoader.Load(modelDir, dtype, null, o.Quantization.Parse(parse, modelDir, dtype));
        LoraConfig config = method switch
        {
            "dylora" => new DyLoraConfig { RMin = s.Get(o.RankMin), Distribution = s.Get(o.RankDistribution), Frozen = !s.Get(o.NotFrozen) },
            "adalora" => new AdaLoraConfig
            {
                TargetR = s.Get(o.TargetR), InitR = s.Get(o.InitR), Tinit = s.Get(o.Tinit), Tfinal = s.Get(o.Tfinal),
                DeltaT = s.Get(o.DeltaT), OrthRegWeight = s.Get(o.OrthRegWeight),
            },
            _ => new LoraConfig(),
        };
        if (config is not AdaLoraConfig) // AdaLoRA ignores r (init_r is its rank) and rsLoRA
        {
            config.R = s.Get(o.R);
            config.UseRslora = s.Get(o.RsLora);
        }
        config.LoraAlpha = s.Get(o.Alpha);
        config.LoraDropout = s.Get(o.Dropout);
        config.UseDora = method == "dora";
        config.BaseModelNameOrPath = modelDir;
        if (s.Get(o.Target) is string target) config.TargetModules = CliOptions.ParseTargets(target);
        (config as DyLoraConfig)?.Validate();
        var adaConfig = config as AdaLoraConfig;
        if (adaConfig is not null && s.Get(o.LoraPlusRatio) is not null) throw new PeftSharpException("--lora-plus-ratio: not supported with --method adalora");
        var ada = adaConfig is null ? null : AdaLoraModel.Create(model, adaConfig, seed: (long)seed);
        var lora = adaConfig is null ? LoraModel.Create(model, config, seed: (long)seed) : null;
        Console.Error.WriteLine(ada?.ParameterReport() ?? lora!.ParameterReport());

        double lr = s.Get(o.Lr), wd = s.Get(o.WeightDecay);
        IReadOnlyList<ParameterGroup> groups = s.Get(o.LoraPlusRatio) is double ratio
            ? LoraPlus.Groups(lora!, lr, ratio, wd).Select(g => new ParameterGroup(g.Parameters, g.LearningRate, g.WeightDecay)).ToList()
            : ParameterGroups.DecayAndNoDecay(ada?.TrainableParameters() ?? lora!.TrainableParameters(), lr, wd);
        var options = new TrainingOptions
        {
            MaxSteps = s.Get(o.Steps),
            Epochs = s.Get(o.Epochs),
            BatchSize = s.Get(o.BatchSize),
            GradientAccumulationSteps = s.Get(o.GradAccum),
            Schedule = schedule,
            WarmupRatio = s.Get(o.WarmupRatio),
            MaxGradNorm = s.Get(o.MaxGradNorm),
            EvalSteps = s.Get(o.EvalSteps),
            SaveSteps = s.Get(o.SaveSteps) > 0 ? s.Get(o.SaveSteps) : long.MaxValue / 2,
            OutputDir = outDir,
            Seed = seed,
            LoggingSteps = 1,
            GradientCheckpointing = s.Get(o.GradientCheckpointing),
        };
        Action<long>? beforeStep = null;
        if (config is DyLoraConfig dy)
        {
            var sampler = new RankSampler(dy.RMin, dy.R, dy.Distribution, dy.GeometricP, (int)seed);
            beforeStep = step => lora!.SetRank(sampler.ForStep(step), frozen: dy.Frozen);
        }
        void SaveAdapter(string dir)
        {
            if (ada is null) AdapterFiles.Save(lora!, dir, AdapterFiles.DefaultAdapter, modelDir);
            else AdaLoraFiles.Save(ada, dir, AdapterFiles.DefaultAdapter, modelDir);
        }

        // DP-SGD (train --dp-…): its own batches and gradients through Trainer.Gradients; the ordinary path is untouched.
        using var dp = dpOptions is null ? null
            : new Privacy.DpSgd(model, lora!, lora!.TrainableParameters(), train, tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0, dpOptions);

        var display = new ProgressDisplay();
        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true; // let the trainer save a checkpoint, then exit
            cancel.Cancel();
            Console.Error.WriteLine("\ninterrupted: saving a checkpoint...");
        };
        Console.CancelKeyPress += onCancel;
        // SIGTERM (docker stop, Kubernetes, batch schedulers) is handled as Ctrl+C: checkpoint, then exit 143 (128 + 15).
        bool terminated = false;
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true; // keep running until the checkpoint is written
            terminated = true;
            cancel.Cancel();
            Console.Error.WriteLine("\nSIGTERM: saving a checkpoint...");
        });
        TrainingResult result;
        try
        {
            using var trainer = new Trainer(model, groups, options, train, validation, tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0)
            {
                Progress = display,
                BeforeStep = beforeStep,
                Gradients = dp,
                // AdaLoRA: the regulariser joins each step's loss; ranks are allocated after each optimizer step with
                // PEFT's global_step = steps done (1-based), so the final allocation comes at step total_step − tfinal.
                ExtraLoss = ada is null ? null : ada.OrthogonalRegularization,
                AfterOptimizerStep = ada is null ? null : step => ada.UpdateAndAllocate(step + 1),
                OnCheckpoint = dir =>
                {
                    SaveAdapter(dir);
                    ada?.Allocator?.Save(Path.Combine(dir, RankAllocator.StateFileName));
                },
            };
            if (adaConfig is not null)
            {
                adaConfig.TotalStep = checked((int)trainer.TotalSteps);
                adaConfig.Normalize(); // PEFT's checks of the schedule against total_step
            }
            if (dp is not null) Console.Error.WriteLine(o.Dp.Plan(s, dp, trainer.TotalSteps));
            if (resumeFrom is not null)
            {
                trainer.Resume(resumeFrom);
                if (ada is not null)
                {
                    ada.Allocator!.Load(Path.Combine(resumeFrom, RankAllocator.StateFileName));
                    adaConfig!.RankPattern = AdaLoraConfig.Load(resumeFrom).RankPattern;
                }
                Console.Error.WriteLine($"resumed from {resumeFrom} at step {trainer.GlobalStep}");
            }
            result = display.Run(() => trainer.Train(cancel.Token));
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        if (config is DyLoraConfig) lora!.SetRank(null);
        SaveAdapter(outDir);
        if (ada is not null)
            Console.Error.WriteLine($"AdaLoRA ranks kept: {string.Join(", ", ada.KeptRanks().Select(kv => $"{kv.Key} {kv.Value}"))}");
        string metrics = Path.Combine(outDir, MetricsLog.FileName);
        string plot = Path.Combine(outDir, "loss.png");
        LossPlot.Save(metrics, plot);
        var logged = MetricsLog.Read(metrics);
        var losses = logged.Where(m => m.Loss is double l && !double.IsNaN(l)).Select(m => m.Loss!.Value).ToList();
        Console.WriteLine($"{(result.Cancelled ? "stopped" : "done")}: {result.Steps} steps, adapter in {outDir}, loss plot {plot}");
        var spent = dp?.Spent(result.Steps);
        if (spent is { } sp) Console.WriteLine($"privacy spent: ε = {sp.Epsilon:G4} at δ = {dp!.Options.Delta:G3} (RDP accountant, order {sp.Order:G3})");
        if (s.Get(o.Json) && spent is null)
            JsonOutput.Write(new
            {
                steps = result.Steps,
                train_loss_first = losses.Count > 0 ? losses[0] : (double?)null,
                train_loss_last = result.LastLoss,
                eval_loss = result.LastEvalLoss,
                tokens_per_second = logged.LastOrDefault(m => m.TokensPerSecond is not null)?.TokensPerSecond,
                adapter_dir = outDir,
            });
        else if (s.Get(o.Json) && spent is { } dpSpent)
            JsonOutput.Write(new
            {
                steps = result.Steps,
                train_loss_first = losses.Count > 0 ? losses[0] : (double?)null,
                train_loss_last = result.LastLoss,
                eval_loss = result.LastEvalLoss,
                tokens_per_second = logged.LastOrDefault(m => m.TokensPerSecond is not null)?.TokensPerSecond,
                adapter_dir = outDir,
                epsilon = dpSpent.Epsilon,
                delta = dp!.Options.Delta,
                noise_multiplier = dp.NoiseMultiplier,
                sample_rate = dp.SampleRate,
            });
        return !result.Cancelled ? 0 : terminated ? 143 : 130;
    }
}
