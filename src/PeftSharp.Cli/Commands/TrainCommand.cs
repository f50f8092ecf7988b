using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Cli.Training;
using PeftSharp.Training;
using PeftSharp.Cli.Training.Methods;
using PeftSharp.Tuners;
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
        var command = new Command("train", $"fine-tune an adapter ({string.Join(", ", o.Methods.Select(m => m.Name))}); writes a PEFT adapter folder");
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
        public IReadOnlyList<TrainMethod> Methods = TrainMethods.Create();
        public Option<string> Method;
        public SharedMethodOptions Shared = new();
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
        public Option<bool> GradientCheckpointing = new("--gradient-checkpointing") { Description = "recompute activations in backward to save memory" };
        public Option<bool> Resume = new("--resume") { Description = "continue from the newest checkpoint in --out" };
        public Option<string?> Config = new("--config") { Description = "JSON file with defaults for any of these options (e.g. {\"r\": 16, \"lr\": 1e-4})" };
        public Option<bool> Json = CliOptions.Json();
        public QuantizationOptions Quantization = new();
        public DpTrainOptions Dp = new();
        public GaLoreTrainOptions Optimizer = new();

        public Options()
        {
            Method = new("--method") { Description = string.Join(", ", Methods.Select(m => m.Name)), DefaultValueFactory = _ => "lora" };
        }

        /// <summary>Every option of the command: the common ones, the shared adapter knobs, then each method's own, then DP-SGD's.</summary>
        public Option[] All => [Model, Data, Out, Method, .. Shared.All, Steps, Epochs, Lr, WeightDecay, Schedule, WarmupRatio,
            BatchSize, GradAccum, SeqLen, MaxGradNorm, DType, EvalData, ValSplit, EvalSteps, SaveSteps, Seed, GradientCheckpointing,
            .. Methods.SelectMany(m => m.Options).DistinctBy(x => x.Name), Resume, Config, Json, .. Dp.All, .. Optimizer.All];
    }

    static int Run(ParseResult parse, Options o)
    {
        var s = new TrainSettings(parse, parse.GetValue(o.Config));
        foreach (var unknown in s.UnknownKeys(o.All)) throw new PeftSharpException($"--config: unknown key \"{unknown}\"");
        s.ValidateAll(o.All);
        string modelDir = s.Get(o.Model), outDir = s.Get(o.Out), methodName = s.Get(o.Method).ToLowerInvariant();
        var method = o.Methods.FirstOrDefault(m => m.Name == methodName)
            ?? throw new PeftSharpException($"--method: expected {string.Join(", ", o.Methods.Select(m => m.Name))}, got \"{methodName}\"");
        var dtype = CliOptions.ParseDType(s.Get(o.DType));
        o.Optimizer.UsesGaLore(s, method.Name);
        if (!method.TrainsAdapter && parse.GetValue(o.Quantization.LoadIn4Bit)) throw new PeftSharpException($"--load-in-4bit: --method {method.Name} trains every weight, which a 4-bit base cannot; use an adapter method");
        var dpOptions = o.Dp.Enabled(s) ? o.Dp.Build(s, method.Name, s.Get(o.GradientCheckpointing), s.Get(o.BatchSize), s.Get(o.GradAccum), (ulong)s.Get(o.Seed)) : null;
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
        double lr = s.Get(o.Lr), wd = s.Get(o.WeightDecay);
        PeftModel? peft = null;
        MethodHooks hooks = new();
        IReadOnlyList<ParameterGroup> groups;
        if (method.TrainsAdapter)
        {
            var config = method.CreateConfig(s, o.Shared, model.Config);
            config.BaseModelNameOrPath = modelDir;
            peft = new PeftModel(model);
            peft.AddAdapter(AdapterFiles.DefaultAdapter, config, seed: (long)seed);
            peft.SetAdapter(AdapterFiles.DefaultAdapter);
            hooks = method.Attach(peft, AdapterFiles.DefaultAdapter, config, s, o.Shared, seed);
            Console.Error.WriteLine(peft.ParameterReport());
            groups = method.Groups(peft, lr, wd, s, o.Shared);
        }
        else
        {
            // Full fine-tuning: every weight trains; nanoGPT's decay / no-decay split.
            foreach (var p in model.parameters()) p.requires_grad = true;
            groups = ParameterGroups.DecayAndNoDecay(ParameterGroups.Trainable(model), lr, wd);
        }
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
        // A full fine-tune's checkpoints already hold every weight (trainable.safetensors); the model folder is written at the end.
        void SaveAdapter(string dir)
        {
            if (peft is not null) peft.Save(dir, AdapterFiles.DefaultAdapter, modelDir);
            else if (dir == outDir) ModelSaver.SaveInto(model, modelDir, dir);
        }

        // DP-SGD (train --dp-…): its own batches and gradients through Trainer.Gradients; the ordinary path is untouched.
        using var dp = dpOptions is null ? null
            : new Privacy.DpSgd(model, peft?.Get<LoraModel>() ?? throw new PeftSharpException("--dp-*: DP-SGD trains LoRA adapters only (--method lora)"),
                                peft!.TrainableParameters(), train, tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0, dpOptions);

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
        long optimizerStateBytes;
        try
        {
            var optimizer = o.Optimizer.Build(s, method.Name, groups, options);
            if (!method.TrainsAdapter) Console.Error.WriteLine($"trainable params: {model.parameters().Sum(p => p.numel()):N0} (every weight of the model)");
            if (optimizer is not null)
                Console.Error.WriteLine($"GaLore: rank {optimizer.Options.Rank}, update_proj_gap {optimizer.Options.UpdateProjGap}, scale {optimizer.Options.Scale}, " +
                                        $"{optimizer.Projected.Count()} projected matrices; optimizer state {optimizer.StateBytes / 1e6:F1} MB");
            using var trainer = new Trainer(model, groups, options, train, validation, tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0, optimizer)
            {
                Progress = display,
                BeforeStep = hooks.BeforeStep,
                Gradients = dp,
                ExtraLoss = hooks.ExtraLoss,
                AfterOptimizerStep = hooks.AfterOptimizerStep,
                OnCheckpoint = dir =>
                {
                    SaveAdapter(dir);
                    hooks.SaveState?.Invoke(dir);
                },
            };
            hooks.OnTotalSteps?.Invoke(trainer.TotalSteps);
            if (dp is not null) Console.Error.WriteLine(o.Dp.Plan(s, dp, trainer.TotalSteps));
            if (resumeFrom is not null)
            {
                trainer.Resume(resumeFrom);
                hooks.LoadState?.Invoke(resumeFrom);
                Console.Error.WriteLine($"resumed from {resumeFrom} at step {trainer.GlobalStep}");
            }
            result = display.Run(() => trainer.Train(cancel.Token));
            optimizerStateBytes = trainer.Optimizer.StateBytes;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        string? finish = hooks.OnFinish?.Invoke();
        SaveAdapter(outDir);
        if (finish is not null) Console.Error.WriteLine(finish);
        string metrics = Path.Combine(outDir, MetricsLog.FileName);
        string plot = Path.Combine(outDir, "loss.png");
        LossPlot.Save(metrics, plot);
        var logged = MetricsLog.Read(metrics);
        var losses = logged.Where(m => m.Loss is double l && !double.IsNaN(l)).Select(m => m.Loss!.Value).ToList();
        Console.WriteLine($"{(result.Cancelled ? "stopped" : "done")}: {result.Steps} steps, {(peft is null ? "model" : "adapter")} in {outDir}, loss plot {plot}");
        var spent = dp?.Spent(result.Steps);
        if (spent is { } sp) Console.WriteLine($"privacy spent: ε = {sp.Epsilon:G4} at δ = {dp!.Options.Delta:G3} (RDP accountant, order {sp.Order:G3})");
        if (s.Get(o.Json))
        {
            var summary = new Dictionary<string, object?>
            {
                ["steps"] = result.Steps,
                ["train_loss_first"] = losses.Count > 0 ? losses[0] : null,
                ["train_loss_last"] = result.LastLoss,
                ["eval_loss"] = result.LastEvalLoss,
                ["tokens_per_second"] = logged.LastOrDefault(m => m.TokensPerSecond is not null)?.TokensPerSecond,
                ["adapter_dir"] = outDir,
            };
            if (!method.TrainsAdapter)
            {
                summary["optimizer"] = s.Get(o.Optimizer.Optimizer).ToLowerInvariant();
                summary["optimizer_state_bytes"] = optimizerStateBytes;
            }
            if (spent is { } dpSpent)
            {
                summary["epsilon"] = dpSpent.Epsilon;
                summary["delta"] = dp!.Options.Delta;
                summary["noise_multiplier"] = dp.NoiseMultiplier;
                summary["sample_rate"] = dp.SampleRate;
            }
            JsonOutput.Write(summary);
        }
        return !result.Cancelled ? 0 : terminated ? 143 : 130;
    }
}
