using PeftSharp.Quantization;
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
    /// <summary>
    /// The weight: [out, in], or [in, out] when <see cref="FanInFanOut"/>; packed 4-bit values when <see cref="IsQuantized"/>.
    /// </summary>
    public Parameter weight;
    /// <summary>The bias [out], or null.</summary>
    public Parameter? bias;

    /// <summary>Input size.</summary>
    public long InFeatures { get; }
    /// <summary>Output size.</summary>
    public long OutFeatures { get; }
    /// <summary>True when the weight is stored [in, out] (GPT-2 Conv1D), as PEFT's <c>fan_in_fan_out</c>.</summary>
    public bool FanInFanOut { get; }

    /// <summary>
    /// A linear layer with parameters uninitialised (torch.empty); <paramref name="fanInFanOut"/> stores the weight [in, out] as GPT-2's Conv1D.
    /// </summary>
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

    /// <summary>
    /// Set while the weight is held in 4 bits (QLoRA; bitsandbytes' Linear4bit): <see cref="weight"/> is then the
    /// frozen packed uint8 codes [(out·in + 1)/2, 1] of the [out, in] matrix (also for Conv1D), this is what
    /// dequantizes them, and the forward computes in <see cref="ComputeDType"/>. See PeftSharp.Quantization.
    /// </summary>
    public FourBitQuantState? QuantState { get; private set; }
    /// <summary>
    /// The dtype a 4-bit layer dequantizes to and computes in (bitsandbytes' <c>bnb_4bit_compute_dtype</c>; default float32).
    /// </summary>
    public ScalarType ComputeDType { get; set; } = ScalarType.Float32;
    /// <summary>Whether the weight is held in 4 bits (<see cref="QuantState"/> is set).</summary>
    public bool IsQuantized => QuantState is not null;

    /// <summary>The weight as [out, in], whatever the storage layout (a view, no copy; a float32 dequantized copy when 4-bit).</summary>
    public Tensor WeightOutIn => QuantState is { } q ? q.Dequantize(weight, ScalarType.Float32) : FanInFanOut ? weight.t() : weight;

    /// <summary>Overwrites the weight with an [out, in] matrix (re-quantized with the same settings when 4-bit).</summary>
    public void SetWeightOutIn(Tensor outIn)
    {
        using var _ = no_grad();
        if (QuantState is { } q) ReplaceWeight(Quantized4BitWeight.Quantize(outIn.to_type(q.DType), q.Options));
        else weight.copy_(FanInFanOut ? outIn.t() : outIn);
    }

    /// <summary>
    /// Swaps the weight parameter: a 4-bit weight (packed codes become the frozen <c>weight</c>), or, with null, a
    /// full-precision one taken from <paramref name="plain"/> in this layer's storage layout.
    /// </summary>
    public void ReplaceWeight(Quantized4BitWeight? quantized, Tensor? plain = null)
    {
        if (quantized is not null && !quantized.State.Shape.SequenceEqual([OutFeatures, InFeatures]))
            throw new PeftSharpException($"4-bit weight of shape [{string.Join(", ", quantized.State.Shape)}] does not fit a [{OutFeatures}, {InFeatures}] linear layer");
        var data = quantized?.Packed ?? plain ?? throw new ArgumentNullException(nameof(plain));
        var old = weight;
        weight = new Parameter(data.DetachFromDisposeScope(), requires_grad: quantized is null && old.requires_grad);
        ConditionallyRegisterParameter(nameof(weight), weight);
        QuantState?.Dispose();
        QuantState = quantized?.State;
        old.Dispose();
    }

    /// <summary>The frozen layer's own output: x·Wᵀ + b.</summary>
    protected override Tensor LayerForward(Tensor x)
    {
        if (QuantState is { } q) return FourBitMatmul.Linear(x, weight, q, bias, ComputeDType);
        if (FanInFanOut)
        {
            // Conv1D: y = x·W + b with W [in, out].
            var y = x.matmul(weight);
            return bias is null ? y : y.add_(bias);
        }
        return nn.functional.linear(x, weight, bias);
    }
}
