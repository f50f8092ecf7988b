using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>LayerNorm with HF names <c>weight</c> and <c>bias</c> (GPT-2's ln_1, ln_2, ln_f).</summary>
public sealed class LayerNorm : nn.Module<Tensor, Tensor>
{
    /// <summary>Scale [size].</summary>
    public Parameter weight;
    /// <summary>Shift [size].</summary>
    public Parameter bias;
    readonly double eps;

    /// <summary>
    /// A LayerNorm over the last <paramref name="size"/> values with epsilon <paramref name="eps"/>; parameters uninitialised.
    /// </summary>
    public LayerNorm(long size, double eps, ScalarType dtype, Device? device) : base(nameof(LayerNorm))
    {
        this.eps = eps;
        weight = new Parameter(empty([size], dtype, device));
        bias = new Parameter(empty([size], dtype, device));
        RegisterComponents();
    }

    /// <summary>Normalises <paramref name="x"/> over its last dimension, then scales and shifts.</summary>
    public override Tensor forward(Tensor x) =>
        nn.functional.layer_norm(x, [weight.shape[0]], weight, bias, eps);
}

/// <summary>
/// RMSNorm as transformers' LlamaRMSNorm: normalise in float32, cast back to the input dtype, then scale:
/// <c>weight · (x / sqrt(mean(x²) + eps))</c>.
/// </summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    /// <summary>Scale [size].</summary>
    public Parameter weight;
    readonly double eps;

    /// <summary>
    /// An RMSNorm over the last <paramref name="size"/> values with epsilon <paramref name="eps"/>; parameters uninitialised.
    /// </summary>
    public RmsNorm(long size, double eps, ScalarType dtype, Device? device) : base(nameof(RmsNorm))
    {
        this.eps = eps;
        weight = new Parameter(empty([size], dtype, device));
        RegisterComponents();
    }

    /// <summary>weight · x / sqrt(mean(x²) + eps), the normalisation in float32.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var x32 = x.to_type(ScalarType.Float32);
        var normed = x32.mul(x32.pow(2).mean([-1], keepdim: true).add_(eps).rsqrt_());
        return weight.mul(normed.to_type(x.dtype)).MoveToOuterDisposeScope();
    }
}
