using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Quantization;

/// <summary>LoftQ's result for one weight: W ≈ dequant(Q) + s·B·A.</summary>
public sealed class LoftQResult : IDisposable
{
    internal LoftQResult(Quantized4BitWeight quantized, Tensor a, Tensor b, IReadOnlyList<double> errors)
    {
        Quantized = quantized;
        A = a.DetachFromDisposeScope();
        B = b.DetachFromDisposeScope();
        Errors = errors;
    }

    /// <summary>The 4-bit base Q_T of the last iteration.</summary>
    public Quantized4BitWeight Quantized { get; }
    /// <summary>lora_A [r, in] (float32).</summary>
    public Tensor A { get; }
    /// <summary>lora_B [out, r] (float32).</summary>
    public Tensor B { get; }
    /// <summary>‖W − (dequant(Q_t) + s·B_t·A_t)‖_F after each iteration t = 1..T.</summary>
    public IReadOnlyList<double> Errors { get; }

    /// <summary>Disposes the quantized weight and the factors.</summary>
    public void Dispose()
    {
        Quantized.Dispose();
        A.Dispose();
        B.Dispose();
    }
}

/// <summary>
/// LoftQ initialisation (Li et al. 2023; PEFT's <c>loftq_utils.loftq_init</c>): instead of starting QLoRA from
/// Q = quant(W) with B = 0, alternate T times
/// <code>Q_t = quant(W − s·B_{t−1}·A_{t−1});   s·B_t·A_t = best rank-r approximation (SVD) of W − dequant(Q_t)</code>
/// so that dequant(Q) + s·B·A starts closer to W. The rank-r factor is split as in PEFT, L = U_r·√Σ_r and
/// R = √Σ_r·V_rᵀ, with B = L/√s and A = R/√s so that s·B·A = L·R for any scaling s (PEFT assumes s = 1).
/// </summary>
public static class LoftQ
{
    /// <summary>
    /// Runs LoftQ on a weight given as [out, in]. <paramref name="options"/> is the 4-bit quantizer (PEFT uses
    /// NF4, block 64, no double quantization); the SVD is exact (float32).
    /// </summary>
    public static LoftQResult Initialize(Tensor weightOutIn, int rank, double scaling, int iterations, FourBitOptions? options = null)
    {
        if (iterations < 1) throw new PeftSharpException($"loftq_iter must be at least 1, got {iterations}");
        if (rank < 1 || rank > Math.Min(weightOutIn.shape[0], weightOutIn.shape[1]))
            throw new PeftSharpException($"LoftQ rank {rank} must be between 1 and min(out, in) = {Math.Min(weightOutIn.shape[0], weightOutIn.shape[1])}");
        options ??= FourBitOptions.Nf4;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w = weightOutIn.detach().to_type(ScalarType.Float32);
        var target = w; // what Q_t quantizes: W − s·B·A of the previous iteration
        Quantized4BitWeight? q = null;
        Tensor l = null!, r = null!;
        var errors = new List<double>();
        for (int t = 0; t < iterations; t++)
        {
            q?.Dispose();
            q = Quantized4BitWeight.Quantize(target, options);
            var residual = w.sub(q.Dequantize());
            var (u, s, vh) = linalg.svd(residual, fullMatrices: false);
            var sqrtS = s.narrow(0, 0, rank).sqrt();
            l = u.narrow(1, 0, rank).mul(sqrtS.unsqueeze(0));   // [out, r]
            r = sqrtS.unsqueeze(1).mul(vh.narrow(0, 0, rank));  // [r, in]
            var lowRank = l.matmul(r);
            errors.Add(linalg.norm(residual.sub(lowRank)).item<float>());
            target = w.sub(lowRank);
        }
        double root = Math.Sqrt(scaling);
        return new LoftQResult(q!, r.div(root), l.div(root), errors);
    }

    /// <summary>‖W − dequant(quant(W))‖_F: the error QLoRA starts from (A random, B = 0).</summary>
    public static double QLoraStartError(Tensor weightOutIn, FourBitOptions? options = null)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w = weightOutIn.detach().to_type(ScalarType.Float32);
        using var q = Quantized4BitWeight.Quantize(w, options ?? FourBitOptions.Nf4);
        return linalg.norm(w.sub(q.Dequantize())).item<float>();
    }

    /// <summary>
    /// LoRA's <c>init_lora_weights="loftq"</c> on one layer, as PEFT: A and B from LoftQ, and the (full-precision)
    /// base weight replaced by dequant(Q), which re-quantizing with the same settings gives back. The base must
    /// still be full precision: LoftQ needs W itself, which a 4-bit layer no longer has.
    /// </summary>
    public static void InitializeAdapter(Linear host, Linear a, Linear b, int rank, double scaling, int bits, int iterations)
    {
        if (host.IsQuantized)
            throw new PeftSharpException(
                "init_lora_weights \"loftq\" needs the full-precision base weight: load the model without 4-bit quantization, create the adapter, " +
                "then quantize the base (QuantizedModels.Quantize, or save it and run `peftsharp quantize`)");
        if (bits != 4) throw new PeftSharpException($"loftq_config.loftq_bits {bits} is not supported (PeftSharp's LoftQ quantizes to 4-bit NF4)");
        if (host.weight.device.type == DeviceType.META) return;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var result = Initialize(host.WeightOutIn, rank, scaling, iterations);
        a.weight.copy_(result.A);
        b.weight.copy_(result.B);
        b.bias?.zero_();
        host.SetWeightOutIn(result.Quantized.Dequantize(host.weight.dtype));
    }
}
