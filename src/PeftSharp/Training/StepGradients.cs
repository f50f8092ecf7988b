namespace PeftSharp.Training;

/// <summary>What a custom gradient computation reports for one optimizer step.</summary>
/// <param name="Loss">Mean loss of the examples used (NaN when there were none).</param>
/// <param name="Tokens">Real tokens processed.</param>
/// <param name="Examples">Examples used.</param>
public readonly record struct StepGradient(double Loss, long Tokens, int Examples);

/// <summary>
/// Replaces how <see cref="Trainer"/> computes a step's gradients (DP-SGD: its own batch sampling, per-example
/// clipping and noise). It fills <c>.grad</c> of every trainable parameter; the trainer then makes the optimizer step
/// as usual, without its own gradient clipping. It must depend only on the step and torch's generator, so that
/// resumed runs repeat exactly.
/// </summary>
public interface IStepGradients
{
    /// <summary>
    /// Computes step <paramref name="step"/>'s gradients into the parameters' <c>grad</c> and returns its loss and token counts.
    /// </summary>
    StepGradient Compute(long step);
}
