namespace PeftSharp.Training;

/// <summary>
/// How <see cref="Trainer"/> trains. Learning rates and weight decay belong to the <see cref="ParameterGroup"/>s;
/// everything else is here, with transformers' TrainingArguments defaults where one exists.
/// </summary>
public sealed record TrainingOptions
{
    /// <summary>Passes over the training set; ignored when <see cref="MaxSteps"/> is set.</summary>
    public int Epochs { get; init; } = 1;
    /// <summary>Optimizer steps to make; null: <see cref="Epochs"/> × (batches per epoch) / <see cref="GradientAccumulationSteps"/> (at least 1).</summary>
    public long? MaxSteps { get; init; }
    /// <summary>Examples per micro-batch (one forward and backward).</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Micro-batches per optimizer step. The loss of a step is the mean over all labelled tokens of its micro-batches.</summary>
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>Learning-rate schedule after warmup (default linear, as transformers).</summary>
    public ScheduleKind Schedule { get; init; } = ScheduleKind.Linear;
    /// <summary>Warmup steps; when 0, <see cref="WarmupRatio"/> × total steps (rounded up).</summary>
    public long WarmupSteps { get; init; }
    /// <summary>Warmup as a fraction of total steps, used when <see cref="WarmupSteps"/> is 0.</summary>
    public double WarmupRatio { get; init; }

    /// <summary>AdamW β1 (default 0.9).</summary>
    public double AdamBeta1 { get; init; } = 0.9;
    /// <summary>AdamW β2 (default 0.999).</summary>
    public double AdamBeta2 { get; init; } = 0.999;
    /// <summary>AdamW ε (default 1e-8).</summary>
    public double AdamEpsilon { get; init; } = 1e-8;
    /// <summary>Global L2 gradient-norm limit; 0 or less: no clipping (the norm is still reported).</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>A metrics.jsonl line (mean loss since the previous one) every this many steps. Progress is reported every step regardless.</summary>
    public long LoggingSteps { get; init; } = 10;
    /// <summary>Evaluate on the validation set every this many steps; 0: only after the last step. Needs validation examples.</summary>
    public long EvalSteps { get; init; }
    /// <summary>Write a checkpoint every this many steps, and after the last one; 0: no periodic checkpoints (cancellation still saves one).</summary>
    public long SaveSteps { get; init; }
    /// <summary>Checkpoints kept in <see cref="OutputDir"/> (the newest ones); 0 or less: keep all.</summary>
    public int SaveTotalLimit { get; init; } = 2;
    /// <summary>Folder for checkpoint-&lt;step&gt;/ folders and metrics.jsonl; null: write nothing.</summary>
    public string? OutputDir { get; init; }

    /// <summary>Seeds torch's generator at the start of training and the data order.</summary>
    public ulong Seed { get; init; } = 42;
    /// <summary>Reshuffle the training examples every epoch.</summary>
    public bool Shuffle { get; init; } = true;
    /// <summary>Examples per validation batch; null: <see cref="BatchSize"/>.</summary>
    public int? EvalBatchSize { get; init; }
    /// <summary>Positions whose logits are computed at once in the loss (<see cref="CausalLMLoss"/>).</summary>
    public int LossChunkSize { get; init; } = CausalLMLoss.DefaultChunkSize;
    /// <summary>Recompute each transformer block's activations during backward instead of keeping them (less memory, about a third more compute).</summary>
    public bool GradientCheckpointing { get; init; }

    /// <exception cref="PeftSharpException">A value out of range, named as the option.</exception>
    public void Validate()
    {
        static void Require(bool ok, string message) { if (!ok) throw new PeftSharpException(message); }
        Require(Epochs >= 1, $"epochs must be at least 1, got {Epochs}");
        Require(MaxSteps is null or >= 1, $"max steps must be at least 1, got {MaxSteps}");
        Require(BatchSize >= 1, $"batch size must be at least 1, got {BatchSize}");
        Require(GradientAccumulationSteps >= 1, $"gradient accumulation steps must be at least 1, got {GradientAccumulationSteps}");
        Require(WarmupSteps >= 0, $"warmup steps must be 0 or more, got {WarmupSteps}");
        Require(WarmupRatio is >= 0 and <= 1, $"warmup ratio must be between 0 and 1, got {WarmupRatio}");
        Require(AdamBeta1 is >= 0 and < 1 && AdamBeta2 is >= 0 and < 1, $"Adam betas must be in [0, 1), got {AdamBeta1} and {AdamBeta2}");
        Require(AdamEpsilon >= 0, $"Adam epsilon must be 0 or more, got {AdamEpsilon}");
        Require(LoggingSteps >= 1, $"logging steps must be at least 1, got {LoggingSteps}");
        Require(EvalSteps >= 0, $"eval steps must be 0 or more, got {EvalSteps}");
        Require(SaveSteps >= 0, $"save steps must be 0 or more, got {SaveSteps}");
        Require(EvalBatchSize is null or >= 1, $"eval batch size must be at least 1, got {EvalBatchSize}");
        Require(LossChunkSize >= 1, $"loss chunk size must be at least 1, got {LossChunkSize}");
    }
}
