namespace PeftSharp.Training;

/// <summary>The shape of the learning rate after warmup.</summary>
public enum ScheduleKind
{
    /// <summary>transformers' get_constant_schedule_with_warmup.</summary>
    Constant,
    /// <summary>transformers' get_linear_schedule_with_warmup: down to 0 at the last step.</summary>
    Linear,
    /// <summary>transformers' get_cosine_schedule_with_warmup (half a cosine period: down to 0 at the last step).</summary>
    Cosine,
}

/// <summary>
/// The multiplier of each group's base learning rate at an optimizer step, with the semantics of transformers'
/// <c>get_*_schedule_with_warmup</c> (a LambdaLR): the update made after <c>step</c> earlier updates uses
/// <see cref="Factor"/>(step). Warmup rises linearly from 0 (the very first update has rate 0 when there is warmup).
/// The schedule is a pure function of the step, so its only state is the step count.
/// </summary>
public sealed record LearningRateSchedule(ScheduleKind Kind, long WarmupSteps, long TotalSteps, double CosineCycles = 0.5)
{
    /// <summary>
    /// The factor the base learning rate is multiplied by at <paramref name="step"/>: linear warmup from 0, then constant, linear decay to 0, or cosine decay (transformers' schedules).
    /// </summary>
    public double Factor(long step)
    {
        if (step < WarmupSteps) return (double)step / Math.Max(1, WarmupSteps);
        double progress = (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
        return Kind switch
        {
            ScheduleKind.Constant => 1.0,
            ScheduleKind.Linear => Math.Max(0.0, (double)(TotalSteps - step) / Math.Max(1, TotalSteps - WarmupSteps)),
            ScheduleKind.Cosine => Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * CosineCycles * 2.0 * progress))),
            _ => throw new ArgumentOutOfRangeException(nameof(Kind), Kind, null),
        };
    }

    /// <summary>transformers' warmup from a ratio: ceil(ratio × total steps).</summary>
    public static long WarmupFromRatio(double ratio, long totalSteps) => (long)Math.Ceiling(ratio * totalSteps);

    /// <summary>Parses a schedule name: constant (or constant_with_warmup), linear or cosine.</summary>
    /// <exception cref="PeftSharpException">Any other name.</exception>
    public static ScheduleKind Parse(string name) => name.ToLowerInvariant() switch
    {
        "constant" or "constant_with_warmup" => ScheduleKind.Constant,
        "linear" => ScheduleKind.Linear,
        "cosine" => ScheduleKind.Cosine,
        _ => throw new PeftSharpException($"unknown learning-rate schedule \"{name}\": expected constant, linear or cosine"),
    };
}
