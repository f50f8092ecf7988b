using static TorchSharp.torch;

namespace PeftSharp.Tuners.UniPelt;

/// <summary>Running mean of gate values seen in forwards (detached; for export and inspection).</summary>
internal sealed class GateMeter
{
    double sum;
    long count;

    public void Add(Tensor gates)
    {
        using var _ = no_grad();
        sum += gates.detach().to_type(ScalarType.Float64).sum().item<double>();
        count += gates.numel();
    }

    /// <summary>The mean, or null when no gate was seen.</summary>
    public double? Mean => count == 0 ? null : sum / count;
}

/// <summary>Mean gate values measured over some forwards (see <see cref="UniPeltModel.MeasureGates"/>).</summary>
/// <param name="Lora">Mean LoRA gate per LoRA layer path.</param>
/// <param name="Adapter">Mean adapter gate per adapter layer path.</param>
/// <param name="Prefix">Mean prefix gate per decoder layer.</param>
public sealed record GateMeans(IReadOnlyDictionary<string, double> Lora, IReadOnlyDictionary<string, double> Adapter, IReadOnlyList<double> Prefix);
