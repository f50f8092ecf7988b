using System.CommandLine;
using PeftSharp.Benchmarks;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench train</c>: training throughput of a randomly initialised model built from a real config.json,
/// with LoRA or full fine-tuning, reported as model FLOP utilisation against this machine's matrix-multiply rate
/// measured at the start of the same run.
/// </summary>
public static class BenchTrainCommand
{
    public static Command Create()
    {
        var config = BenchCommand.ConfigOption();
        var method = new Option<string>("--method") { Description = "lora (default) or full", DefaultValueFactory = _ => "lora" };
        var dtype = CliOptions.DType();
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 4 }.AtLeast(1);
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 512 }.AtLeast(2);
        var steps = new Option<int>("--steps") { Description = "measured optimizer steps (after 2 warm-up steps)", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var rank = new Option<int>("--r") { DefaultValueFactory = _ => 8 }.AtLeast(1);
        var target = new Option<string?>("--target") { Description = "comma-separated target modules (default: PEFT's for the model type)" };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "recompute activations in backward" };
        var fourBit = new Option<bool>("--load-in-4bit") { Description = "QLoRA: decoder linear layers in NF4 with double quantization, computed in --dtype" };
        var json = CliOptions.Json();
        var command = new Command("train", "training throughput and memory (MFU against this machine's GEMM rate)")
            { config, method, dtype, batch, seqLen, steps, rank, target, checkpointing, fourBit, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(config)!, parse.GetValue(method)!, parse.GetValue(dtype)!, parse.GetValue(batch),
            parse.GetValue(seqLen), parse.GetValue(steps), parse.GetValue(rank), parse.GetValue(target), parse.GetValue(checkpointing), parse.GetValue(fourBit), parse.GetValue(json))));
        return command;
    }

    const int WarmupSteps = 2;

    static int Run(string configPath, string method, string dtypeName, int batch, int seqLen, int steps, int r, string? target, bool checkpointing, bool fourBit, bool json)
    {
        var dtype = CliOptions.ParseDType(dtypeName);
        if (method is not ("lora" or "full")) throw new PeftSharpException($"--method: expected lora or full, got \"{method}\"");
        var config = ModelConfig.Load(configPath);
        if (seqLen > config.ContextLength) throw new PeftSharpException($"--seq-len {seqLen} exceeds the model's context ({config.ContextLength})");
        Console.Error.WriteLine($"bench train: measuring this machine's {ModelLoader.DTypeName(dtype)} matrix-multiply rate...");
        double gemm = GemmProbe.MeasureGflops(dtype);
        Console.Error.WriteLine($"  best GEMM: {gemm:F0} GFLOP/s on {get_num_threads()} threads");

        if (fourBit && method != "lora") throw new PeftSharpException("--load-in-4bit trains adapters only: use --method lora");
        using var model = fourBit
            ? Quantization.QuantizedModelLoader.CreateRandom(config, dtype, null,
                new Quantization.BitsAndBytesConfig { QuantType = Quantization.FourBitType.Nf4, DoubleQuant = true, ComputeDType = dtype })
            : ModelLoader.Create(config, dtype);
        if (!fourBit) model.InitializeWeights(0);
        long trainedMatmul;
        IReadOnlyList<(string Name, TorchSharp.Modules.Parameter Param)> trainable;
        if (method == "lora")
        {
            var loraConfig = new LoraConfig { R = r, LoraAlpha = 2 * r };
            if (target is not null) loraConfig.TargetModules = CliOptions.ParseTargets(target);
            var lora = LoraModel.Create(model, loraConfig, seed: 1);
            trainable = lora.TrainableParameters();
            trainedMatmul = trainable.Sum(p => p.Param.numel());
            Console.Error.WriteLine($"  {lora.ParameterReport()}");
        }
        else
        {
            trainable = ParameterGroups.Trainable(model);
            trainedMatmul = FlopCount.MatmulWeights(config);
        }
        model.GradientCheckpointing = checkpointing;
        // LoRA factors are extra matmul weights in forward and backward too.
        double flopsPerToken = FlopCount.TrainingPerToken(config, seqLen, trainedMatmul)
                               + (method == "lora" ? 4.0 * trainedMatmul : 0);

        var random = new Random(0);
        int examples = batch * (steps + WarmupSteps);
        var data = Enumerable.Range(0, examples).Select(_ =>
        {
            var ids = Enumerable.Range(0, seqLen).Select(_ => random.Next(config.VocabSize)).ToArray();
            return new TrainingExample(ids, ids);
        }).ToList();
        var options = new TrainingOptions { MaxSteps = steps + WarmupSteps, BatchSize = batch, Shuffle = false, Schedule = ScheduleKind.Constant, LoggingSteps = 1000 };
        var groups = ParameterGroups.DecayAndNoDecay(trainable, 1e-4, 0.0);
        var times = new List<double>();
        using (var trainer = new Trainer(model, groups, options, data) { Progress = new StepClock(times) })
            trainer.Train();
        double measured = times[^1] - times[WarmupSteps - 1];
        double tokensPerSecond = (double)steps * batch * seqLen / measured;
        double mfu = tokensPerSecond * flopsPerToken / (gemm * 1e9);
        long peak = ResourceUsage.PeakRssBytes();
        Console.WriteLine($"{method} {ModelLoader.DTypeName(dtype)} batch {batch}×{seqLen}: {tokensPerSecond:F0} tokens/s, {measured / steps:F2} s/step, " +
                          $"{flopsPerToken / 1e6:F0} MFLOP/token → {tokensPerSecond * flopsPerToken / 1e9:F0} GFLOP/s = MFU {100 * mfu:F1}% of {gemm:F0}; peak RSS {peak / 1e9:F2} GB");
        if (json)
            JsonOutput.Write(new
            {
                tokens_per_second = tokensPerSecond,
                model_flops_per_token = flopsPerToken,
                gemm_gflops = gemm,
                mfu,
                peak_rss_bytes = peak,
                step_seconds = measured / steps,
                method = fourBit ? "qlora" : method,
                dtype = ModelLoader.DTypeName(dtype),
                batch_size = batch,
                seq_len = seqLen,
            });
        return 0;
    }

    sealed class StepClock(List<double> times) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p)
        {
            if (p.Kind != TrainingEventKind.Step) return;
            times.Add(p.Elapsed.TotalSeconds);
            Console.Error.WriteLine($"  step {p.Step}/{p.TotalSteps}: {p.Elapsed.TotalSeconds:F1} s, loss {p.Loss:F3}");
        }
    }
}
