using PeftSharp.Tuners.Lora;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Quantization;

/// <summary>
/// How far the written weights are from the exact merge M = dequant(W) + ΔW (float32): over the layers that were
/// rounded (re-quantized to 4 bits, or cast to a 16-bit dtype), the largest |written − M|, ‖written − M‖_F / ‖M‖_F,
/// and ‖written − M‖_F / ‖ΔW‖_F over the adapted ones (above 1, the rounding is larger than the adapter's update).
/// </summary>
public sealed record MergeRounding(string What, int Layers, double MaxAbs, double RelativeFrobenius, double RelativeToDelta)
{
    /// <summary>One line for logs.</summary>
    public override string ToString() => Layers == 0
        ? $"{What}: no layer rounded"
        : $"{What} ({Layers} layers): max |Δ| = {MaxAbs:G4}, ‖Δ‖_F / ‖merged‖_F = {RelativeFrobenius:G4}" +
          (double.IsNaN(RelativeToDelta) ? "" : $", ‖Δ‖_F / ‖s·B·A‖_F = {RelativeToDelta:G4}");
}

/// <summary>
/// Merging LoRA adapters into a base that holds 4-bit layers. Adapted 4-bit layers are dequantized to float32 and
/// merged exactly; then either every layer is written in full precision (4-bit layers dequantized, merged ones cast
/// to their original dtype) or the merged layers are re-quantized with their own settings (a full-precision base is
/// quantized with <c>requantize</c>'s). The rounding this causes is measured against the exact float32 merge.
/// </summary>
public static class QuantizedMerge
{
    /// <summary>
    /// Merges the active adapters and unloads LoRA. With <paramref name="requantize"/> null the model ends fully in
    /// full precision; otherwise its quantizable layers end 4-bit (untouched 4-bit layers keep their codes).
    /// </summary>
    public static MergeRounding MergeAndUnload(LoraModel lora, BitsAndBytesConfig? requantize, bool safe = false)
    {
        var root = lora.Root;
        using var _ = no_grad();
        // Original settings of each 4-bit layer, and ‖ΔW‖² of adapted ones, before anything changes.
        var original = QuantizedModels.Quantized(root).ToDictionary(q => q.Layer, q => (q.Layer.QuantState!.Options, q.Layer.QuantState.DType, q.Layer.ComputeDType));
        var adapted = lora.LinearLayers.Values.ToDictionary(l => l.Host, l => DeltaNormSquared(l));
        foreach (var (layer, _) in original)
            if (requantize is null || adapted.ContainsKey(layer)) QuantizedModels.Dequantize(layer, ScalarType.Float32);
        lora.MergeAndUnload(safe);

        var stats = new Stats();
        if (requantize is null)
        {
            // Full precision: merged layers go back to their original dtype.
            foreach (var (layer, (_, dtype, _)) in original)
            {
                using var scope = NewDisposeScope();
                var merged = layer.WeightOutIn.to_type(ScalarType.Float32);
                var cast = merged.to_type(dtype);
                stats.Add(merged, cast.to_type(ScalarType.Float32), adapted.GetValueOrDefault(layer, double.NaN));
                layer.ReplaceWeight(null, layer.FanInFanOut ? cast.t().contiguous() : cast);
            }
            return stats.Result("cast to the original dtype");
        }
        foreach (var (_, layer) in QuantizedModels.Quantizable(root, requantize).ToList())
        {
            if (layer.IsQuantized) continue; // a 4-bit layer without adapter: codes unchanged
            var (options, dtype, compute) = original.TryGetValue(layer, out var o) ? o : (requantize.Options, layer.weight.dtype, requantize.ComputeDType);
            using var scope = NewDisposeScope();
            var merged = layer.WeightOutIn.to_type(ScalarType.Float32);
            var q = Quantized4BitWeight.Quantize(merged.to_type(dtype), options);
            stats.Add(merged, q.Dequantize(), adapted.GetValueOrDefault(layer, double.NaN));
            layer.ReplaceWeight(q);
            layer.ComputeDType = compute;
        }
        NativeHeap.Trim();
        return stats.Result("re-quantized to 4 bits");
    }

    static double DeltaNormSquared(LoraLinear layer)
    {
        using var scope = NewDisposeScope();
        Tensor? sum = null;
        foreach (var name in layer.ActiveAdapters.Where(layer.Adapters.ContainsKey))
            sum = sum is null ? layer.DeltaWeight(name) : sum.add(layer.DeltaWeight(name));
        return sum is null ? 0 : Math.Pow(linalg.norm(sum).item<float>(), 2);
    }

    sealed class Stats
    {
        int layers;
        double maxAbs, error2, merged2, adaptedError2, delta2;

        public void Add(Tensor merged, Tensor written, double deltaNorm2)
        {
            var diff = written.sub(merged);
            double e2 = Math.Pow(linalg.norm(diff).item<float>(), 2);
            layers++;
            maxAbs = Math.Max(maxAbs, diff.abs().max().item<float>());
            error2 += e2;
            merged2 += Math.Pow(linalg.norm(merged).item<float>(), 2);
            if (!double.IsNaN(deltaNorm2)) { adaptedError2 += e2; delta2 += deltaNorm2; }
        }

        public MergeRounding Result(string what) => new(what, layers, maxAbs,
            layers == 0 ? 0 : Math.Sqrt(error2 / merged2), delta2 > 0 ? Math.Sqrt(adaptedError2 / delta2) : double.NaN);
    }
}
