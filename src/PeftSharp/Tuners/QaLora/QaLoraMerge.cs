using PeftSharp.Quantization.Gptq;
using PeftSharp.Tuners.Lora;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.QaLora;

/// <summary>
/// Folding QA-LoRA adapters into the zero points of their group-quantized base (Xu et al. 2023). A QA-LoRA adapter
/// sees each quantization group of input columns only through its mean, so its update ΔW is constant within a group:
/// W + ΔW = scale·(q − z) + Δ = scale·(q − (z − Δ/scale)). The merged layer keeps its codes and scales and gets the
/// zero points z' = z − Δ/scale, which are fractions in general (the exact fold), or rounded to integers for a
/// standard GPTQ checkpoint (<see cref="RoundZeros"/>).
/// </summary>
public static class QaLoraMerge
{
    /// <summary>
    /// Folds the active adapters of every QA-LoRA layer into its GPTQ zero points and unloads LoRA; returns how many
    /// layers changed. Every active adapter must be QA-LoRA, and each layer's quantization groups must be contiguous
    /// (no act-order) and lie within one pooling group (qalora_group_size a multiple of the group size).
    /// </summary>
    public static int MergeIntoZeros(LoraModel lora)
    {
        using var _ = no_grad();
        var updates = new List<(Linear Host, GptqWeight Weight)>();
        foreach (var (path, layer) in lora.LinearLayers)
        {
            var names = layer.ActiveAdapters.Where(layer.Adapters.ContainsKey).ToList();
            if (names.Count == 0) continue;
            var w = GptqLayers.Of(layer.Host) ?? throw new PeftSharpException($"{path}: the base layer holds no group quantization to fold QA-LoRA into");
            if (!w.HasContiguousGroups)
                throw new PeftSharpException($"{path}: the base uses act-order (g_idx is permuted), so a QA-LoRA update is not constant within its quantization groups; it cannot be folded exactly");
            foreach (var name in names)
            {
                if (layer.Adapters[name].QaloraGroupSize is not int group)
                    throw new PeftSharpException($"adapter \"{name}\" on {path} is plain LoRA; only QA-LoRA adapters (use_qalora) fold into zero points");
                if (group % w.GroupSize != 0)
                    throw new PeftSharpException($"{path}: qalora_group_size {group} is not a multiple of the base's quantization group size {w.GroupSize}; the update is not constant within a group");
            }
            using var scope = NewDisposeScope();
            Tensor? delta = null;
            foreach (var name in names) delta = delta is null ? layer.DeltaWeight(name) : delta.add(layer.DeltaWeight(name));
            // ΔW is constant within each group: its first column per group, as [groups, out].
            var perGroup = delta!.reshape(w.OutFeatures, w.Groups, w.GroupSize).select(2, 0).t();
            var zeros = w.Zeros.sub(perGroup.div(w.Scales));
            updates.Add((layer.Host, w.WithZeros(zeros)));
        }
        lora.Unload();
        foreach (var (host, weight) in updates) GptqLayers.Set(host, weight);
        return updates.Count;
    }

    /// <summary>
    /// Rounds the zero points of every GPTQ layer under <paramref name="root"/> to the nearest integer a v1 GPTQ
    /// checkpoint can store (1..2^bits, as v1 stores zero − 1), in place; returns how many zero points moved and
    /// how many had to be clamped into that range.
    /// </summary>
    public static (long Rounded, long Clamped, double MaxShift) RoundZeros(nn.Module root)
    {
        using var _ = no_grad();
        long rounded = 0, clamped = 0;
        double maxShift = 0;
        foreach (var (_, layer, w) in GptqLayers.Quantized(root).ToList())
        {
            using var scope = NewDisposeScope();
            var nearest = w.Zeros.round();
            var stored = nearest.clamp(1, 1 << w.Bits);
            rounded += w.Zeros.ne(stored).sum().item<long>();
            clamped += nearest.ne(stored).sum().item<long>();
            maxShift = Math.Max(maxShift, w.Zeros.sub(stored).abs().max().item<float>());
            GptqLayers.Set(layer, w.WithZeros(stored));
        }
        return (rounded, clamped, maxShift);
    }
}
