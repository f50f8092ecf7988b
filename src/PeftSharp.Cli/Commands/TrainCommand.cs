using System.CommandLine;
using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Cli.Training;
using PeftSharp.Training;
using PeftSharp.Tuners;
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
        public Option<string> Method = new("--method") { Description = "lora, dora, dylora, adalora, houlsby, pfeiffer, parallel or bottleneck", DefaultValueFactory = _ => "lora" };
        public Option<int> R = new("--r") { Description = "LoRA rank (DyLoRA: the largest rank)", DefaultValueFactory = _ => 8 };
        public Option<double> Alpha = new("--alpha") { Description = "lora_alpha", DefaultValueFactory = _ => 16 };
        public Option<double> Dropout = new("--dropout") { Description = "lora_dropout", DefaultValueFactory = _ => 0.0 };
        public Option<string?> Target = new("--target") { Description = "comma-separated target modules, or all-linear (default: PEFT's for the model type)" };
        public Option<bool> RsLora = new("--rslora") { Description = "scale by α/√r (rsLoRA)" };
        public Option<long?> Steps = new("--steps") { Description = "optimizer steps (overrides --epochs)" };
        public Option<int> Epochs = new("--epochs") { DefaultValueFactory = _ => 1 };
        public Option<double> Lr = new("--lr") { Description = "learning rate", DefaultValueFactory = _ => 2e-4 };
        public Option<double> WeightDecay = new("--weight-decay") { Description = "AdamW weight decay (matrices only)", DefaultValueFactory = _ => 0.0 };
        public Option<string> Schedule = new("--schedule") { Description = "constant, linear or cosine", DefaultValueFactory = _ => "linear" };
        public Option<double> WarmupRatio = new("--warmup-ratio") { DefaultValueFactory = _ => 0.03 };
        public Option<int> BatchSize = new("--batch-size") { DefaultValueFactory = _ => 4 };
        public Option<int> GradAccum = new("--grad-accum") { DefaultValueFactory = _ => 1 };
        public Option<int> SeqLen = new("--seq-len") { Description = "block size for text; cut-off for instruction examples", DefaultValueFactory = _ => 512 };
        public Option<double> MaxGradNorm = new("--max-grad-norm") { DefaultValueFactory = _ => 1.0 };
        public Option<string> DType = CliOptions.DType();
        public Option<string?> EvalData = new("--eval-data") { Description = "validation file (else --val-split of the training data)" };
        public Option<double> ValSplit = new("--val-split") { Description = "fraction of the data held out for validation when no --eval-data (0: none)", DefaultValueFactory = _ => 0.0 };
        public Option<long> EvalSteps = new("--eval-steps") { Description = "evaluate every N steps (0: at the end only)", DefaultValueFactory = _ => 0 };
        public Option<long> SaveSteps = new("--save-steps") { Description = "checkpoint every N steps (0: at the end only)", DefaultValueFactory = _ => 0 };
        public Option<int> Seed = new("--seed") { DefaultValueFactory = _ => 42 };
        public Option<double?> LoraPlusRatio = new("--lora-plus-ratio") { Description = "LoRA+: learning rate of B = ratio × lr" };
        public Option<bool> GradientCheckpointing = new("--gradient-checkpointing") { Description = "recompute activations in backward to save memory" };
        public Option<int> RankMin = new("--rank-min") { Description = "DyLoRA: smallest rank sampled", DefaultValueFactory = _ => 1 };
        public Option<string> RankDistribution = new("--rank-distribution") { Description = "DyLoRA: uniform or geometric", DefaultValueFactory = _ => "uniform" };
        public Option<bool> NotFrozen = new("--dylora-not-frozen") { Description = "DyLoRA: train all of the first b components (default: only component b)" };
        public Option<int> TargetR = new("--target-r") { Description = "AdaLoRA: average rank per layer after pruning (target_r)", DefaultValueFactory = _ => 8 };
        public Option<int> InitR = new("--init-r") { Description = "AdaLoRA: initial rank of every layer (init_r)", DefaultValueFactory = _ => 12 };
        public Option<int> Tinit = new("--tinit") { Description = "AdaLoRA: steps before pruning starts", DefaultValueFactory = _ => 0 };
        public Option<int> Tfinal = new("--tfinal") { Description = "AdaLoRA: last steps, trained with the final ranks fixed", DefaultValueFactory = _ => 0 };
        public Option<int> DeltaT = new("--delta-t") { Description = "AdaLoRA: steps between two rank allocations", DefaultValueFactory = _ => 1 };
        public Option<double> OrthRegWeight = new("--orth-reg-weight") { Description = "AdaLoRA: weight of the orthogonal regulariser", DefaultValueFactory = _ => 0.5 };
        public Option<bool> Resume = new("--resume") { Description = "continue from the newest checkpoint in --out" };
        public Option<string?> Config = new("--config") { Description = "JSON file with defaults for any of these options (e.g. {\"r\": 16, \"lr\": 1e-4})" };
        public Option<bool> Json = CliOptions.Json();
        public QuantizationOptions Quantization = new();

        public Option[] All => [Model, Data, Out, Method, R, Alpha, Dropout, Target, RsLora, Steps, Epochs, Lr, WeightDecay, Schedule, WarmupRatio,
            BatchSize, GradAccum, SeqLen, MaxGradNorm, DType, EvalData, ValSplit, EvalSteps, SaveSteps, Seed, LoraPlusRatio, GradientCheckpointing,
            RankMin, RankDistribution, NotFrozen, TargetR, InitR, Tinit, Tfinal, DeltaT, OrthRegWeight, Resume, Config, Json, .. Bottleneck.All];
        public BottleneckTrainOptions Bottleneck = new();
    }

    static int Run(ParseResult parse, Options o)
    {
        var s = new TrainSettings(parse, parse.GetValue(o.Config));
        foreach (var unknown in s.UnknownKeys(o.All)) throw new PeftSharpException($"--config: unknown key \"{unknown}\"");
        string modelDir = s.Get(o.Model), outDir = s.Get(o.Out), method = s.Get(o.Method).ToLowerInvariant();
        bool bottleneck = BottleneckTrainOptions.Methods.Contains(method);
        if (method is not ("lora" or "dora" or "dylora" or "adalora") && !bottleneck)
            throw new PeftSharpException($"--method: expected lora, dora, dylora, adalora, houlsby, pfeiffer, parallel or bottleneck, got \"{method}\"");
        var dtype = CliOptions.ParseDType(s.Get(o.DType));
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
        // Bottleneck adapters (houlsby, pfeiffer, parallel, bottleneck) go through the tuner framework's PeftModel.
        PeftModel? peft = null;
        if (bottleneck)
        {
            if (s.Get(o.LoraPlusRatio) is not null) throw new PeftSharpException($"--lora-plus-ratio: not supported with --method {method}");
            var bnConfig = o.Bottleneck.Build(method, s, model.Config.Hidden, s.Get(o.Dropout), s.Get(o.Target) is string t ? CliOptions.ParseTargets(t) : null);
            bnConfig.BaseModelNameOrPath = modelDir;
            peft = new PeftModel(model);
            peft.AddAdapter(AdapterFiles.DefaultAdapter, bnConfig, seed: (long)seed);
            peft.SetAdapter(AdapterFiles.DefaultAdapter);
            Console.Error.WriteLine(peft.ParameterReport());
        }
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
        var ada = adaConfig is null || peft is not null ? null : AdaLoraModel.Create(model, adaConfig, seed: (long)seed);
        var lora = adaConfig is null && peft is null ? LoraModel.Create(model, config, seed: (long)seed) : null;
        if (peft is null) Console.Error.WriteLine(ada?.ParameterReport() ?? lora!.ParameterReport());

        double lr = s.Get(o.Lr), wd = s.Get(o.WeightDecay);
        IReadOnlyList<ParameterGroup> groups = s.Get(o.LoraPlusRatio) is double ratio
            ? LoraPlus.Groups(lora!, lr, ratio, wd).Select(g => new ParameterGroup(g.Parameters, g.LearningRate, g.WeightDecay)).ToList()
            : ParameterGroups.DecayAndNoDecay(peft?.TrainableParameters() ?? ada?.TrainableParameters() ?? lora!.TrainableParameters(), lr, wd);
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
            if (peft is not null) peft.Save(dir, AdapterFiles.DefaultAdapter, modelDir);
            else if (ada is null) AdapterFiles.Save(lora!, dir, AdapterFiles.DefaultAdapter, modelDir);
            else AdaLoraFiles.Save(ada, dir, AdapterFiles.DefaultAdapter, modelDir);
        }

        var display = new ProgressDisplay();
        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true; // let the trainer save a checkpoint, then exit
            cancel.Cancel();
            Console.Error.WriteLine("\ninterrupted: saving a checkpoint...");
        };
        Console.CancelKeyPress += onCancel;
        TrainingResult result;
        try
        {
            using var trainer = new Trainer(model, groups, options, train, validation, tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0)
            {
                Progress = display,
                BeforeStep = beforeStep,
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
        if (s.Get(o.Json))
            JsonOutput.Write(new
            {
                steps = result.Steps,
                train_loss_first = losses.Count > 0 ? losses[0] : (double?)null,
                train_loss_last = result.LastLoss,
                eval_loss = result.LastEvalLoss,
                tokens_per_second = logged.LastOrDefault(m => m.TokensPerSecond is not null)?.TokensPerSecond,
                adapter_dir = outDir,
            });
        return result.Cancelled ? 130 : 0;
    }
}
