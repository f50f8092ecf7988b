namespace PeftSharp.Training;

/// <summary>What a <see cref="TrainingProgress"/> report is about.</summary>
public enum TrainingEventKind
{
    /// <summary>An optimizer step finished: Loss, LearningRate, GradNorm, TokensPerSecond and Eta are set.</summary>
    Step,
    /// <summary>The validation set was evaluated: EvalLoss is set.</summary>
    Evaluation,
    /// <summary>A checkpoint was committed: CheckpointDir is set.</summary>
    Checkpoint,
}

/// <summary>
/// One report from <see cref="Trainer"/>, made synchronously on the training thread (use a plain
/// <see cref="IProgress{T}"/> implementation, not <see cref="Progress{T}"/>, which posts to another thread).
/// </summary>
/// <param name="Step">Optimizer steps completed.</param>
/// <param name="Epoch">Epochs completed, fractional.</param>
/// <param name="Loss">This step's mean token loss (NaN when the step had no labelled token).</param>
/// <param name="LearningRate">The first group's learning rate used for this step.</param>
/// <param name="GradNorm">The global gradient L2 norm before clipping.</param>
/// <param name="TokensPerSecond">Real (non-padding) tokens per second since this run started.</param>
/// <param name="Eta">Remaining time at this run's average speed.</param>
public sealed record TrainingProgress(
    TrainingEventKind Kind,
    long Step,
    long TotalSteps,
    double Epoch,
    TimeSpan Elapsed,
    double Loss = double.NaN,
    double LearningRate = double.NaN,
    double GradNorm = double.NaN,
    double TokensPerSecond = double.NaN,
    TimeSpan? Eta = null,
    double? EvalLoss = null,
    string? CheckpointDir = null);

/// <summary>What <see cref="Trainer.Train"/> did.</summary>
/// <param name="Steps">Optimizer steps completed in total (including those before a resume).</param>
/// <param name="Cancelled">Training stopped early because the cancellation token was signalled (a checkpoint was saved if there is an output folder).</param>
/// <param name="LastCheckpoint">The newest checkpoint written by this run, if any.</param>
public sealed record TrainingResult(long Steps, double? LastLoss, double? LastEvalLoss, bool Cancelled, string? LastCheckpoint);
