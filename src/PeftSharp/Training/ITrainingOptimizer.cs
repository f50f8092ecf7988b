namespace PeftSharp.Training;

/// <summary>
/// What <see cref="Trainer"/> needs from an optimizer: one update from the parameters' gradients, dropping the
/// gradients, and its state as a file for exact resumption. <see cref="AdamWOptimizer"/> is the default;
/// <see cref="GaLore.GaLoreAdamW"/> keeps Adam's moments in a low-rank space.
/// </summary>
public interface ITrainingOptimizer : IDisposable
{
    /// <summary>The parameter groups it updates (names unique across groups).</summary>
    IReadOnlyList<ParameterGroup> Groups { get; }

    /// <summary>One update of every parameter that has a gradient; learning rate = group rate × <paramref name="learningRateFactor"/>.</summary>
    void Step(double learningRateFactor = 1.0);

    /// <summary>Drops every gradient (torch's <c>zero_grad(set_to_none=True)</c>).</summary>
    void ZeroGrad();

    /// <summary>Bytes held as optimizer state (moments, projectors, float32 masters), not counting parameters and gradients.</summary>
    long StateBytes { get; }

    /// <summary>Writes the state to a safetensors file (atomically).</summary>
    void Save(string path);

    /// <summary>Restores the state written by <see cref="Save"/> for the same parameters.</summary>
    void Load(string path);
}
