using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Federated;

/// <summary>
/// An adapter as federated learning moves it: per LoRA linear layer (by module path) its factors A [r, in] and
/// B [out, r] as float32 on the CPU. B may carry no A (FFA-LoRA sends only B).
/// </summary>
public sealed class LoraFactors : IDisposable
{
    /// <summary>Takes ownership of <paramref name="layers"/>: the tensors are disposed with this object.</summary>
    public LoraFactors(Dictionary<string, (Tensor A, Tensor B)> layers) => Layers = layers;

    /// <summary>Per LoRA layer (by module path): A [r, in] and B [out, r], float32 on the CPU.</summary>
    public Dictionary<string, (Tensor A, Tensor B)> Layers { get; }

    /// <summary>Copies an adapter's factors out of a model.</summary>
    public static LoraFactors Read(LoraModel lora, string adapter)
    {
        using var _ = no_grad();
        var layers = new Dictionary<string, (Tensor, Tensor)>(StringComparer.Ordinal);
        foreach (var (path, layer) in lora.LinearLayers)
        {
            if (!layer.Adapters.ContainsKey(adapter)) continue;
            var a = layer.A(adapter).weight.detach().to_type(ScalarType.Float32).cpu().clone();
            var b = layer.B(adapter).weight.detach().to_type(ScalarType.Float32).cpu().clone();
            a.DetachFromDisposeScope();
            b.DetachFromDisposeScope();
            layers[path] = (a, b);
        }
        return new LoraFactors(layers);
    }

    /// <summary>Copies these factors into an adapter of a model (same layers and shapes).</summary>
    public void WriteTo(LoraModel lora, string adapter)
    {
        using var _ = no_grad();
        foreach (var (path, (a, b)) in Layers)
        {
            var layer = lora.LinearLayers[path];
            layer.A(adapter).weight.copy_(a);
            layer.B(adapter).weight.copy_(b);
        }
    }

    /// <summary>Bytes of float32 values in the factors that travel: A and B, or only B.</summary>
    public long Bytes(bool onlyB = false) => Layers.Values.Sum(f => (onlyB ? 0 : f.A.numel()) + f.B.numel()) * sizeof(float);

    /// <summary>A deep copy: new tensors, owned by the copy.</summary>
    public LoraFactors Clone() =>
        new(Layers.ToDictionary(kv => kv.Key, kv => (Keep(kv.Value.A.clone()), Keep(kv.Value.B.clone())), StringComparer.Ordinal));

    internal static Tensor Keep(Tensor t)
    {
        t.DetachFromDisposeScope();
        return t;
    }

    /// <summary>Disposes every factor tensor.</summary>
    public void Dispose()
    {
        foreach (var (a, b) in Layers.Values)
        {
            a.Dispose();
            b.Dispose();
        }
    }
}

/// <summary>One client's result of a round: its factors after local training and how many examples it holds.</summary>
public sealed record ClientUpdate(string Client, LoraFactors Factors, long Samples);
