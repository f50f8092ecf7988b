using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>
/// A linear map with Hugging Face's parameter names (<c>weight</c>, <c>bias</c>). It stands for both
/// <c>nn.Linear</c> (weight stored [out, in]) and GPT-2's <c>Conv1D</c> (weight stored [in, out],
/// PEFT's <c>fan_in_fan_out</c>), so checkpoints load unchanged and adapters see one kind of layer.
/// </summary>
public class Linear : TunableLayer
{
    public Parameter weight;
    public Parameter? bias;

    public long InFeatures { get; }
    public long OutFeatures { get; }
    /// <summary>True when the weight is stored [in, out] (GPT-2 Conv1D), as PEFT's <c>fan_in_fan_out</c>.</summary>
    public bool FanInFanOut { get; }

    public Linear(long inFeatures, long outFeatures, bool hasBias, bool fanInFanOut = false,
                  ScalarType dtype = ScalarType.Float32, Device? device = null) : base(nameof(Linear))
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        FanInFanOut = fanInFanOut;
        long[] shape = fanInFanOut ? [inFeatures, outFeatures] : [outFeatures, inFeatures];
        weight = new Parameter(empty(shape, dtype, device));
        bias = hasBias ? new Parameter(empty([outFeatures], dtype, device)) : null;
        RegisterComponents();
    }

    /// <summary>The weight as [out, in], whatever the storage layout (a view, no copy).</summary>
    public Tensor WeightOutIn => FanInFanOut ? weight.t() : weight;

    /// <summary>The frozen layer's own output: x·Wᵀ + b.</summary>
    public override Tensor BaseForward(Tensor x)
    {
        if (FanInFanOut)
        {
            // Conv1D: y = x·W + b with W [in, out].
            var y = x.matmul(weight);
            return bias is null ? y : y.add_(bias);
        }
        return nn.functional.linear(x, weight, bias);
    }
}
