using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>
/// E LoRA experts on one linear map in → out, stored stacked: <c>lora_A</c> [E, r, in] and <c>lora_B</c> [E, out, r]
/// (expert e is PEFT's <c>lora_A.weight</c> = lora_A[e], <c>lora_B.weight</c> = lora_B[e]); expert e adds
/// <c>B_e·A_e·dropout(x)·scaling</c>. Float32 whatever the model's dtype. Used sparsely (MixLoRA: each expert on the
/// tokens routed to it, one matmul per expert) and densely (MoLoRA: all experts mixed per token in two matmuls).
/// </summary>
public sealed class LoraExperts : nn.Module
{
#pragma warning disable IDE1006 // PEFT's parameter names
    /// <summary>Down projections [E, r, in].</summary>
    public Parameter lora_A;
    /// <summary>Up projections [E, out, r] (zeros at init: a new adapter changes nothing).</summary>
    public Parameter lora_B;
#pragma warning restore IDE1006

    /// <summary>
    /// E experts of rank <paramref name="r"/>: A drawn as PEFT's default (kaiming-uniform, bound 1/√in) or, for
    /// <paramref name="gaussianInit"/>, from N(0, 1/r²) as MixLoRA's "gaussian"; B zeros.
    /// </summary>
    public LoraExperts(int experts, int r, long inFeatures, long outFeatures, double scaling, double dropout, bool gaussianInit, Device device, Generator? generator = null)
        : base(nameof(LoraExperts))
    {
        Scaling = scaling;
        Dropout = dropout;
        var a = gaussianInit
            ? randn([experts, r, inFeatures], ScalarType.Float32, generator: generator).mul_(1.0 / r)
            : rand([experts, r, inFeatures], ScalarType.Float32, generator: generator).mul_(2).sub_(1).mul_(1.0 / Math.Sqrt(inFeatures));
        lora_A = new Parameter(a.to(device));
        lora_B = new Parameter(zeros([experts, outFeatures, r], ScalarType.Float32, device));
        RegisterComponents();
    }

    /// <summary>Number of experts.</summary>
    public int Experts => (int)lora_A.shape[0];
    /// <summary>Rank of each expert.</summary>
    public int Rank => (int)lora_A.shape[1];
    /// <summary>lora_alpha / r (or / √r with rsLoRA).</summary>
    public double Scaling { get; }
    /// <summary>lora_dropout, applied to the experts' input while training.</summary>
    public double Dropout { get; }

    Tensor Drop(Tensor x, bool training) => Dropout > 0 && training ? nn.functional.dropout(x, Dropout, true) : x;

    /// <summary>
    /// The experts' outputs for rows grouped by expert: <paramref name="x"/> [M, in] holds counts[0] rows for expert 0,
    /// then counts[1] rows for expert 1, …; returns [M, out] (float32), each group through its own expert in one matmul.
    /// </summary>
    public Tensor GroupedDelta(Tensor x, IReadOnlyList<long> counts, bool training)
    {
        using var scope = NewDisposeScope();
        var input = Drop(x.to_type(ScalarType.Float32), training);
        var parts = new List<Tensor>();
        long start = 0;
        for (int e = 0; e < counts.Count; e++)
        {
            long c = counts[e];
            if (c == 0) continue;
            var seg = input.narrow(0, start, c);
            parts.Add(seg.matmul(lora_A[e].t()).matmul(lora_B[e].t()));
            start += c;
        }
        var result = parts.Count == 1 ? parts[0] : cat(parts, 0);
        return result.mul(Scaling).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The dense mixture <c>Σ_e w_e·B_e·A_e·x·scaling</c> for <paramref name="x"/> [.., in] and weights [.., E], as two
    /// matmuls (all A stacked to [E·r, in], the rank-r activations scaled by their expert's weight, all B side by side).
    /// </summary>
    public Tensor MixedDelta(Tensor x, Tensor weights, bool training)
    {
        using var scope = NewDisposeScope();
        int e = Experts, r = Rank;
        var input = Drop(x.to_type(ScalarType.Float32), training);
        var z = input.matmul(lora_A.reshape(e * r, -1).t());                      // [.., E·r]
        var shape = z.shape;
        var zw = z.reshape([.. shape[..^1], e, r]).mul(weights.unsqueeze(-1)).reshape(shape);
        var bCat = lora_B.permute(1, 0, 2).reshape(lora_B.shape[1], e * r);        // [out, E·r]
        return zw.matmul(bCat.t()).mul(Scaling).MoveToOuterDisposeScope();
    }
}
