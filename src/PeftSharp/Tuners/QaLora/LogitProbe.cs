using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.QaLora;

/// <summary>
/// How far two versions of a model are apart where it matters: the logits on a fixed probe batch of random token
/// ids (seeded, so every run and every version sees the same batch). Used to report what merging costs.
/// </summary>
public sealed class LogitProbe : IDisposable
{
    readonly Tensor ids;

    /// <summary>A probe of <paramref name="batch"/> × <paramref name="length"/> token ids drawn from the model's vocabulary.</summary>
    public LogitProbe(ModelConfig config, int batch = 2, int length = 32, long seed = 0)
    {
        using var gen = new Generator((ulong)seed);
        int t = Math.Min(length, config.MaxPositionEmbeddings);
        ids = randint(0, config.VocabSize, [batch, t], ScalarType.Int64, generator: gen).DetachFromDisposeScope();
    }

    /// <summary>The model's float32 logits on the probe (no gradient, on the CPU).</summary>
    public Tensor Logits(CausalLM model)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return model.forward(ids.to(model.Device)).to_type(ScalarType.Float32).cpu().MoveToOuterDisposeScope();
    }

    /// <summary>Largest and mean |a − b| over all logits.</summary>
    public static (double Max, double Mean) Difference(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var d = a.sub(b).abs();
        return (d.max().item<float>(), d.mean().item<float>());
    }

    /// <summary>Disposes the probe ids.</summary>
    public void Dispose() => ids.Dispose();
}
