using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization.Gptq;

/// <summary>
/// One linear layer's GPTQ quantization, unpacked: integer codes q [in, out], per-group scales and zero points
/// [groups, out] and the group of every input column <c>g_idx</c> [in]. The weight is
/// W[o, i] = scales[g_idx[i], o] · (q[i, o] − zeros[g_idx[i], o]). Zero points are held as float32: integers for a
/// standard GPTQ layer (the v1 offset already removed), fractions after an exact QA-LoRA merge.
/// </summary>
public sealed class GptqWeight : IDisposable
{
    /// <summary>A quantized weight from copies of its parts (on the CPU).</summary>
    public GptqWeight(int bits, long groupSize, Tensor codes, Tensor scales, Tensor zeros, Tensor gIdx)
    {
        GptqConfig.CheckBits(bits, "bits");
        Bits = bits;
        GroupSize = groupSize;
        Codes = codes.to_type(ScalarType.Byte).cpu().contiguous().clone().DetachFromDisposeScope();
        Scales = scales.to_type(ScalarType.Float32).cpu().contiguous().clone().DetachFromDisposeScope();
        Zeros = zeros.to_type(ScalarType.Float32).cpu().contiguous().clone().DetachFromDisposeScope();
        GIdx = gIdx.to_type(ScalarType.Int64).cpu().contiguous().clone().DetachFromDisposeScope();
    }

    /// <summary>Bits per weight.</summary>
    public int Bits { get; }
    /// <summary>Input columns per group (the whole row when the config says -1).</summary>
    public long GroupSize { get; }
    /// <summary>Integer codes q [in, out] (uint8).</summary>
    public Tensor Codes { get; }
    /// <summary>Scales [groups, out] (float32; the values of the stored float16 scales).</summary>
    public Tensor Scales { get; }
    /// <summary>Zero points [groups, out] (float32).</summary>
    public Tensor Zeros { get; }
    /// <summary>The group of each input column [in] (int64).</summary>
    public Tensor GIdx { get; }
    /// <summary>Input features.</summary>
    public long InFeatures => Codes.shape[0];
    /// <summary>Output features.</summary>
    public long OutFeatures => Codes.shape[1];
    /// <summary>Number of groups.</summary>
    public long Groups => Scales.shape[0];

    /// <summary>Whether column i belongs to group i / group_size (no act-order permutation).</summary>
    public bool HasContiguousGroups
    {
        get
        {
            using var scope = NewDisposeScope();
            return GIdx.eq(arange(InFeatures, ScalarType.Int64).div(GroupSize, rounding_mode: RoundingMode.floor)).all().item<bool>();
        }
    }

    /// <summary>The weight [out, in] in <paramref name="dtype"/> (computed in float32).</summary>
    public Tensor Dequantize(ScalarType dtype = ScalarType.Float32)
    {
        using var scope = NewDisposeScope();
        var s = Scales.index_select(0, GIdx);                         // [in, out]
        var z = Zeros.index_select(0, GIdx);
        var w = Codes.to_type(ScalarType.Float32).sub(z).mul(s).t();  // [out, in]
        return w.to_type(dtype).contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>The same codes and scales with other zero points [groups, out].</summary>
    public GptqWeight WithZeros(Tensor zeros)
    {
        if (!zeros.shape.SequenceEqual(Zeros.shape)) throw new PeftSharpException($"zero points of shape [{string.Join(", ", zeros.shape)}], expected [{string.Join(", ", Zeros.shape)}]");
        return new GptqWeight(Bits, GroupSize, Codes.clone(), Scales.clone(), zeros, GIdx.clone());
    }

    /// <summary>
    /// Round-to-nearest, asymmetric min-max quantization of an [out, in] weight in contiguous groups of
    /// <paramref name="groupSize"/> input columns, with GPTQ's quantizer conventions: the range of each group is
    /// widened to include 0, scale = (max − min) / (2^bits − 1) rounded to float16 (as stored), integer zero point
    /// round(−min / scale), q = clamp(round(w / scale) + zero, 0, 2^bits − 1).
    /// </summary>
    public static GptqWeight Quantize(Tensor outIn, int bits, long groupSize)
    {
        GptqConfig.CheckBits(bits, "bits");
        long outF = outIn.shape[0], inF = outIn.shape[1];
        if (groupSize <= 0 || inF % groupSize != 0)
            throw new PeftSharpException($"group size {groupSize} does not divide in_features {inF}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        double maxq = (1 << bits) - 1;
        long groups = inF / groupSize;
        var w = outIn.detach().to_type(ScalarType.Float32).cpu().reshape(outF, groups, groupSize);
        var xmin = w.amin([-1]).clamp_max(0);
        var xmax = w.amax([-1]).clamp_min(0);
        var flat = xmin.eq(0).logical_and(xmax.eq(0));
        xmin = where(flat, full_like(xmin, -1), xmin);
        xmax = where(flat, full_like(xmax, 1), xmax);
        var scale = xmax.sub(xmin).div(maxq).clamp_min(1e-4).to_type(ScalarType.Float16).to_type(ScalarType.Float32); // [out, groups]
        var zero = xmin.neg().div(scale).round().clamp(0, maxq);
        var q = w.div(scale.unsqueeze(-1)).round().add(zero.unsqueeze(-1)).clamp(0, maxq);  // [out, groups, gs]
        var codes = q.reshape(outF, inF).t();
        var gIdx = arange(inF, ScalarType.Int64).div(groupSize, rounding_mode: RoundingMode.floor);
        return new GptqWeight(bits, groupSize, codes, scale.t(), zero.t(), gIdx);
    }

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        Codes.Dispose();
        Scales.Dispose();
        Zeros.Dispose();
        GIdx.Dispose();
    }
}
