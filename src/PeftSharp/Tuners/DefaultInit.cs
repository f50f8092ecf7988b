using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>PyTorch's default initialisations for tuners' own small layers, drawn from a seeded generator.</summary>
internal static class DefaultInit
{
    /// <summary>torch.nn.Embedding's default init N(0, 1), float32.</summary>
    public static Embedding Embedding(long rows, long dim, Generator? gen, Device device)
    {
        var e = nn.Embedding(rows, dim, dtype: ScalarType.Float32, device: device);
        using var _ = no_grad();
        using var init = randn([rows, dim], ScalarType.Float32, generator: gen);
        e.weight!.copy_(init);
        return e;
    }

    /// <summary>torch.nn.Linear's default init (kaiming_uniform a=√5: U(±1/√in) for weight and bias), float32.</summary>
    public static TorchSharp.Modules.Linear Linear(long input, long output, Generator? gen, Device device, bool hasBias = true)
    {
        var l = nn.Linear(input, output, hasBias: hasBias, dtype: ScalarType.Float32, device: device);
        double bound = 1.0 / Math.Sqrt(input);
        using var _ = no_grad();
        using (var w = rand([output, input], ScalarType.Float32, generator: gen).mul_(2 * bound).sub_(bound)) l.weight!.copy_(w);
        if (hasBias)
            using (var b = rand([output], ScalarType.Float32, generator: gen).mul_(2 * bound).sub_(bound)) l.bias!.copy_(b);
        return l;
    }
}
