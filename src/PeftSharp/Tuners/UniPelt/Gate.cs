using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.UniPelt;

/// <summary>
/// UniPELT's gate: <c>σ(x·wᵀ + b)</c>, one number in (0, 1) per input row, computed in float32. Its <c>weight</c> is
/// [1, in] and its <c>bias</c> [1] (a torch <c>nn.Linear(in, 1)</c>).
/// </summary>
internal static class Gate
{
    /// <summary>A gate for rows of width <paramref name="input"/>, with torch's default Linear init U(±1/√in) drawn from <paramref name="gen"/>.</summary>
    public static Linear Create(long input, Generator? gen, Device device)
    {
        var l = nn.Linear(input, 1, hasBias: true, dtype: ScalarType.Float32, device: device);
        double bound = 1.0 / Math.Sqrt(input);
        using var _ = no_grad();
        l.weight!.uniform_(-bound, bound, gen);
        l.bias!.uniform_(-bound, bound, gen);
        return l;
    }

    /// <summary>σ(x·wᵀ + b) for rows x [..., in] (any dtype): [..., 1] in float32.</summary>
    public static Tensor Apply(Linear gate, Tensor x)
    {
        using var scope = NewDisposeScope();
        var f = x.dtype == ScalarType.Float32 ? x : x.to_type(ScalarType.Float32);
        return sigmoid(gate.forward(f)).MoveToOuterDisposeScope();
    }

    /// <summary>A bias-free projection with torch's default init U(±1/√in), or zeros when <paramref name="zero"/>.</summary>
    public static Linear Projection(long input, long output, bool zero, Generator? gen, Device device)
    {
        var l = nn.Linear(input, output, hasBias: false, dtype: ScalarType.Float32, device: device);
        using var _ = no_grad();
        if (zero) l.weight!.zero_();
        else
        {
            double bound = 1.0 / Math.Sqrt(input);
            l.weight!.uniform_(-bound, bound, gen);
        }
        return l;
    }
}
