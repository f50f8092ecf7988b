using PeftSharp.IO;
using System.Diagnostics;
using PeftSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// Trains the parameters of the given groups (whatever has requires_grad; everything else stays untouched) on a
/// causal LM with AdamW, a warmup schedule, gradient accumulation and clipping, periodic evaluation and
/// checkpoints. Model-agnostic: full fine-tuning, a subset of parameters and adapters all look the same here.
/// </summary>
/// <remarks>
/// <para>One optimizer step: take <see cref="TrainingOptions.GradientAccumulationSteps"/> micro-batches from the
/// loader; run each forward (<see cref="CausalLM.Hidden"/>) and backward (<see cref="CausalLMLoss.Backward"/>,
/// scaled by 1 / labelled tokens of the whole step, so the step's loss is the token mean over all its
/// micro-batches, whatever their padding); clip; AdamW with the schedule's factor; drop the gradients.</para>
/// <para>Every step runs in its own dispose scope, so no tensor outlives it except parameters, gradients (dropped
/// at the end of the step) and optimizer state.</para>
/// <para>Mixed precision: the frozen base may be bf16 while trainable parameters (adapters) are float32; the layers
/// that own such parameters cast at their boundaries, the loss upcasts logits to float32, and AdamW keeps float32
/// masters for trainable parameters that are not float32.</para>
/// </remarks>
public sealed class Trainer : IDisposable
{
    readonly CausalLM _model;
    readonly IReadOnlyList<ParameterGroup> _groups;
    readonly List<(string Name, Parameter Param)> _parameters;
    readonly TrainingOptions _options;
    readonly IReadOnlyList<TrainingExample> _train;
    readonly IReadOnlyList<TrainingExample> _validation;
    readonly long _padTokenId;
    readonly AdamWOptimizer _optimizer;
    readonly DataLoader _loader;
    readonly MetricsLog? _metrics;
    long _step;
    long _tokensSeen;
    double? _lastLoss;
    double? _lastEvalLoss;

    /// <param name="train">Training examples (see <see cref="DataFiles"/>).</param>
    /// <param name="validation">Examples for <see cref="Evaluate"/>; null or empty: no evaluation.</param>
    /// <param name="padTokenId">Id written at padded positions (masked out; any valid id will do).</param>
    /// <exception cref="PeftSharpException">An option is out of range, or there is nothing to train.</exception>
    public Trainer(CausalLM model, IReadOnlyList<ParameterGroup> groups, TrainingOptions options,
                   IReadOnlyList<TrainingExample> train, IReadOnlyList<TrainingExample>? validation = null, long padTokenId = 0)
    {
        options.Validate();
        _parameters = ParameterGroups.All(groups);
        if (_parameters.Count == 0) throw new PeftSharpException("no trainable parameters: every parameter group is empty");
        foreach (var (name, p) in _parameters)
            if (!p.requires_grad) throw new ArgumentException($"parameter '{name}' is in a parameter group but does not require grad", nameof(groups));
        if (train.Count == 0) throw new PeftSharpException("no training examples");
        // Soft prompts put virtual tokens or key/value prefixes in front of every example: they share the context.
        int leading = model.Extensions.LeadingPositions;
        int longest = train.Concat(validation ?? []).Max(e => e.Length);
        if (leading > 0 && longest + leading > model.Config.ContextLength)
            throw new PeftSharpException($"--seq-len: examples of up to {longest} tokens plus the adapter's {leading} virtual/prefix positions exceed the model's context of {model.Config.ContextLength}; use --seq-len {model.Config.ContextLength - leading} or less");
        _model = model;
        _groups = groups;
        _options = options;
        _train = train;
        _validation = validation ?? [];
        _padTokenId = padTokenId;
        _optimizer = new AdamWOptimizer(groups, options.AdamBeta1, options.AdamBeta2, options.AdamEpsilon);
        _loader = new DataLoader(train.Count, options.BatchSize, options.Seed, options.Shuffle);
        TotalSteps = options.MaxSteps ?? Math.Max(1, (long)options.Epochs * _loader.BatchesPerEpoch / options.GradientAccumulationSteps);
        long warmup = options.WarmupSteps > 0 ? options.WarmupSteps : LearningRateSchedule.WarmupFromRatio(options.WarmupRatio, TotalSteps);
        Schedule = new LearningRateSchedule(options.Schedule, warmup, TotalSteps);
        if (options.OutputDir is not null)
        {
            Directory.CreateDirectory(options.OutputDir);
            _metrics = new MetricsLog(Path.Combine(options.OutputDir, MetricsLog.FileName));
        }
    }

    /// <summary>
    /// Called with the step index (0-based) before each optimizer step, for methods that change the model per step
    /// (DyLoRA draws its rank here). It must depend only on the step so that resumed runs repeat exactly.
    /// </summary>
    public Action<long>? BeforeStep { get; init; }

    /// <summary>
    /// A loss term that does not depend on the batch (a regulariser, e.g. AdaLoRA's orthogonal one), added once to each
    /// optimizer step's loss: its gradient joins the batches' before clipping, and its value is in the reported loss.
    /// </summary>
    public Func<Tensor?>? ExtraLoss { get; init; }

    /// <summary>
    /// Called with the step index (0-based, as <see cref="BeforeStep"/>) right after the optimizer step, while the step's
    /// gradients are still there (PEFT's AdaLoRA <c>update_and_allocate</c> runs here). Like BeforeStep, it must depend
    /// only on the step and the model's state so that resumed runs repeat exactly.
    /// </summary>
    public Action<long>? AfterOptimizerStep { get; init; }

    /// <summary>Receives a report after every step, evaluation and checkpoint, synchronously (see <see cref="TrainingProgress"/>).</summary>
    public IProgress<TrainingProgress>? Progress { get; init; }

    /// <summary>
    /// Called with the checkpoint's folder while it is being written (its temporary name: write inside it, do not
    /// keep the path), after the trainer's own files and before it is committed. Use it to add, say, the adapter in
    /// PEFT format. An exception here abandons the checkpoint and stops training; the previous checkpoints stay.
    /// </summary>
    public Action<string>? OnCheckpoint { get; init; }

    /// <summary>
    /// When set, computes each step's gradients instead of the data loader, loss and clipping (DP-SGD, see
    /// <see cref="IStepGradients"/>); the reported gradient norm is then that of the gradient it produced.
    /// </summary>
    public IStepGradients? Gradients { get; init; }

    public long TotalSteps { get; }
    /// <summary>Optimizer steps completed.</summary>
    public long GlobalStep => _step;
    public LearningRateSchedule Schedule { get; }
    public AdamWOptimizer Optimizer => _optimizer;
    public DataLoader Loader => _loader;

    /// <summary>
    /// Restores a checkpoint written by this trainer's configuration: trainable parameters, optimizer state, step
    /// (hence the schedule), torch's generator, data position and token count. Training then continues exactly as
    /// it would have without the interruption. metrics.jsonl loses the lines logged after the checkpoint.
    /// </summary>
    /// <exception cref="PeftSharpException">Not a checkpoint, other trainable parameters, or other training data.</exception>
    public void Resume(string checkpointDir)
    {
        var state = Checkpoint.LoadState(checkpointDir);
        var data = state.Data;
        if (data.Examples != _train.Count || data.BatchSize != _options.BatchSize || data.Seed != _options.Seed || data.Shuffle != _options.Shuffle)
            throw new PeftSharpException(
                $"{checkpointDir}: made with {data.Examples} training examples, batch size {data.BatchSize}, seed {data.Seed}" +
                $"{(data.Shuffle ? "" : ", no shuffling")}; resuming needs the same, got {_train.Count} examples, batch size {_options.BatchSize}, seed {_options.Seed}" +
                $"{(_options.Shuffle ? "" : ", no shuffling")}");
        Checkpoint.LoadTrainable(Path.Combine(checkpointDir, Checkpoint.TrainableFile), _parameters);
        _optimizer.Load(Path.Combine(checkpointDir, Checkpoint.OptimizerFile));
        Checkpoint.LoadRng(Path.Combine(checkpointDir, Checkpoint.RngFile));
        _loader.Position = new DataPosition(data.Epoch, data.Batch);
        _step = state.GlobalStep;
        _tokensSeen = state.TokensSeen;
        _lastLoss = state.LastLoss;
        _lastEvalLoss = state.LastEvalLoss;
        _metrics?.TruncateAfter(_step);
    }

    /// <summary>
    /// Trains until <see cref="TotalSteps"/> or until <paramref name="cancellationToken"/> is signalled. Cancellation
    /// is checked between optimizer steps; when it stops training, a checkpoint of the last completed step is saved
    /// (if there is an output folder) before returning.
    /// </summary>
    public TrainingResult Train(CancellationToken cancellationToken = default)
    {
        // A run that starts from step 0 seeds; a resumed one has restored the generator from its checkpoint.
        if (_step == 0) manual_seed((long)_options.Seed);
        bool wasTraining = _model.training;
        _model.train();
        bool checkpointingBefore = _model.GradientCheckpointing;
        _model.GradientCheckpointing |= _options.GradientCheckpointing;
        var clock = Stopwatch.StartNew();
        long stepsThisRun = 0, tokensThisRun = 0, savedAt = -1;
        string? lastCheckpoint = null;
        double intervalLoss = 0;
        int intervalSteps = 0;
        try
        {
            while (_step < TotalSteps)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    if (_options.OutputDir is not null && _step > 0 && savedAt != _step) lastCheckpoint = Save(clock);
                    return new TrainingResult(_step, _lastLoss, _lastEvalLoss, Cancelled: true, lastCheckpoint);
                }

                var (loss, gradNorm, learningRate, tokens) = TrainStep();
                stepsThisRun++;
                tokensThisRun += tokens;
                _tokensSeen += tokens;
                if (!double.IsNaN(loss)) { _lastLoss = loss; intervalLoss += loss; intervalSteps++; }
                double tokensPerSecond = tokensThisRun / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                var eta = TimeSpan.FromSeconds(clock.Elapsed.TotalSeconds / stepsThisRun * (TotalSteps - _step));
                Progress?.Report(new TrainingProgress(TrainingEventKind.Step, _step, TotalSteps, _loader.EpochProgress, clock.Elapsed,
                    loss, learningRate, gradNorm, tokensPerSecond, eta));

                if (_step % _options.LoggingSteps == 0 || _step == TotalSteps)
                {
                    _metrics?.Append(new MetricsEntry
                    {
                        Step = _step, Epoch = _loader.EpochProgress, Loss = intervalSteps > 0 ? intervalLoss / intervalSteps : double.NaN,
                        LearningRate = learningRate, GradNorm = gradNorm, TokensPerSecond = tokensPerSecond, ElapsedSeconds = clock.Elapsed.TotalSeconds,
                    });
                    (intervalLoss, intervalSteps) = (0, 0);
                }
                bool last = _step == TotalSteps;
                if (_validation.Count > 0 && ((_options.EvalSteps > 0 && _step % _options.EvalSteps == 0) || last))
                {
                    EvaluateAndReport(clock);
                }
                if (_options.OutputDir is not null && _options.SaveSteps > 0 && (_step % _options.SaveSteps == 0 || last))
                {
                    lastCheckpoint = Save(clock);
                    savedAt = _step;
                }
            }
            return new TrainingResult(_step, _lastLoss, _lastEvalLoss, Cancelled: false, lastCheckpoint);
        }
        finally
        {
            _optimizer.ZeroGrad();
            _model.GradientCheckpointing = checkpointingBefore;
            _model.train(wasTraining);
        }
    }

    /// <summary>One optimizer step over GradientAccumulationSteps micro-batches.</summary>
    (double Loss, double GradNorm, double LearningRate, long Tokens) TrainStep()
    {
        if (Gradients is not null) return CustomGradientStep(Gradients);
        using var scope = NewDisposeScope();
        BeforeStep?.Invoke(_step);
        var micro = new List<List<TrainingExample>>();
        for (int i = 0; i < _options.GradientAccumulationSteps; i++)
            micro.Add(_loader.Next().Select(index => _train[index]).ToList());
        // With virtual tokens (prompt tuning, P-tuning) label 0 is predicted from the last virtual token, as in PEFT.
        long labelled = micro.Sum(batch => batch.Sum(e => VirtualTokenLoss.Labelled(_model, e)));

        double lossSum = 0;
        long tokens = 0;
        foreach (var examples in micro)
        {
            using var microScope = NewDisposeScope();
            var batch = Batch.Collate(examples, _padTokenId, _model.Device);
            tokens += batch.Tokens;
            if (examples.Sum(e => VirtualTokenLoss.Labelled(_model, e)) == 0) continue;
            var (hidden, labels) = VirtualTokenLoss.Forward(_model, batch);
            lossSum += CausalLMLoss.Backward(_model, hidden, labels, 1.0 / labelled, _options.LossChunkSize);
        }

        if (labelled > 0 && ExtraLoss?.Invoke() is Tensor extra)
        {
            extra.backward();
            lossSum += extra.item<float>() * labelled;
        }

        double gradNorm = GradientClipping.ClipGradNorm(_parameters.Select(p => p.Param), _options.MaxGradNorm);
        double factor = Schedule.Factor(_step);
        // A step with no labelled token has no gradient: the schedule still advances, the parameters do not move.
        if (labelled > 0) _optimizer.Step(factor);
        AfterOptimizerStep?.Invoke(_step);
        _optimizer.ZeroGrad();
        _step++;
        return (labelled > 0 ? lossSum / labelled : double.NaN, gradNorm, _groups[0].LearningRate * factor, tokens);
    }

    /// <summary>One optimizer step whose gradients come from <see cref="Gradients"/>.</summary>
    (double Loss, double GradNorm, double LearningRate, long Tokens) CustomGradientStep(IStepGradients gradients)
    {
        using var scope = NewDisposeScope();
        BeforeStep?.Invoke(_step);
        var result = gradients.Compute(_step);
        double gradNorm = GradientClipping.ClipGradNorm(_parameters.Select(p => p.Param), 0); // measures only
        double factor = Schedule.Factor(_step);
        _optimizer.Step(factor);
        AfterOptimizerStep?.Invoke(_step);
        _optimizer.ZeroGrad();
        _step++;
        return (result.Loss, gradNorm, _groups[0].LearningRate * factor, result.Tokens);
    }

    /// <summary>Mean token loss over the validation set (token-weighted, no gradients, model in eval mode).</summary>
    public double Evaluate()
    {
        if (_validation.Count == 0) throw new InvalidOperationException("no validation examples were given");
        return ValidationLoss.Mean(_model, _validation, _padTokenId, _options.EvalBatchSize ?? _options.BatchSize, _options.LossChunkSize);
    }

    void EvaluateAndReport(Stopwatch clock)
    {
        double loss = Evaluate();
        _lastEvalLoss = loss;
        _metrics?.Append(new MetricsEntry { Step = _step, Epoch = _loader.EpochProgress, EvalLoss = loss, ElapsedSeconds = clock.Elapsed.TotalSeconds });
        Progress?.Report(new TrainingProgress(TrainingEventKind.Evaluation, _step, TotalSteps, _loader.EpochProgress, clock.Elapsed, EvalLoss: loss));
    }

    /// <summary>Writes checkpoint-&lt;step&gt;/ atomically, then keeps only the newest SaveTotalLimit checkpoints.</summary>
    public string SaveCheckpoint() => Save(Stopwatch.StartNew());

    string Save(Stopwatch clock)
    {
        string outputDir = _options.OutputDir ?? throw new InvalidOperationException("TrainingOptions.OutputDir is not set");
        AtomicDirectory.DeleteStale(outputDir, Checkpoint.Prefix);
        string target = Path.Combine(outputDir, Checkpoint.FolderName(_step));
        AtomicDirectory.Write(target, dir =>
        {
            Checkpoint.SaveTrainable(Path.Combine(dir, Checkpoint.TrainableFile), _parameters);
            _optimizer.Save(Path.Combine(dir, Checkpoint.OptimizerFile));
            Checkpoint.SaveRng(Path.Combine(dir, Checkpoint.RngFile));
            OnCheckpoint?.Invoke(dir);
            // Last: a folder with trainer_state.json is a complete checkpoint.
            Checkpoint.SaveState(Path.Combine(dir, Checkpoint.StateFile), CurrentState());
        });
        Checkpoint.Prune(outputDir, _options.SaveTotalLimit);
        Progress?.Report(new TrainingProgress(TrainingEventKind.Checkpoint, _step, TotalSteps, _loader.EpochProgress, clock.Elapsed, CheckpointDir: target));
        return target;
    }

    TrainerState CurrentState() => new()
    {
        GlobalStep = _step,
        TotalSteps = TotalSteps,
        Epoch = _loader.EpochProgress,
        TokensSeen = _tokensSeen,
        Seed = _options.Seed,
        Data = new DataState(_loader.Position.Epoch, _loader.Position.Batch, _options.Seed, _train.Count, _options.BatchSize, _options.Shuffle),
        Scheduler = new SchedulerState(Schedule.Kind.ToString().ToLowerInvariant(), Schedule.WarmupSteps, Schedule.TotalSteps, _step),
        LastLoss = _lastLoss,
        LastEvalLoss = _lastEvalLoss,
    };

    public void Dispose() => _optimizer.Dispose();
}
