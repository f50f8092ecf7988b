using static TorchSharp.torch;

namespace PeftSharp.Composition;

/// <summary>
/// Merging task tensors (LoRA factors, weight deltas, fine-tuned weights minus the base) as PEFT's
/// <c>utils/merge_utils.py</c> and mergekit define it: task arithmetic, TIES (Yadav et al. 2023: trim to the largest
/// magnitudes, elect a sign per entry, average the entries that agree with it), DARE (Yu et al. 2024: drop entries at
/// random and rescale the survivors by 1/density) and magnitude pruning. Each takes one tensor per task, all of one
/// shape, and one weight per task; the result has that shape.
/// </summary>
public static class TaskMerging
{
    /// <summary>The merge methods, by PEFT's names (the <c>combination_type</c>s without <c>_svd</c>).</summary>
    public static IReadOnlyList<string> Methods { get; } = ["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"];

    /// <summary>Whether <paramref name="method"/> prunes, and so needs a density.</summary>
    public static bool UsesDensity(string method) => method is not "linear";

    /// <summary>Whether <paramref name="method"/> elects a majority sign.</summary>
    public static bool UsesSign(string method) => method is "ties" or "dare_ties";

    /// <summary>
    /// Merges <paramref name="tasks"/> with <paramref name="weights"/> by <paramref name="method"/>.
    /// <paramref name="generator"/> draws DARE's random masks (a fixed seed repeats them).
    /// </summary>
    public static Tensor Merge(string method, IReadOnlyList<Tensor> tasks, IReadOnlyList<double> weights, double? density = null,
                               MajoritySign sign = MajoritySign.Total, Generator? generator = null)
    {
        if (tasks.Count == 0 || tasks.Count != weights.Count) throw new PeftSharpException("merging: give one weight per task tensor");
        if (UsesDensity(method) && density is null) throw new PeftSharpException($"merging: \"{method}\" needs a density in (0, 1]");
        using var scope = NewDisposeScope();
        Tensor result = method switch
        {
            "linear" => Weighted(stack(tasks.ToArray()), weights).sum(0L),
            "magnitude_prune" => Weighted(stack(tasks.Select(t => Prune(t, density!.Value, random: false, generator)).ToArray()), weights).sum(0L),
            "dare_linear" => Weighted(stack(tasks.Select(t => Prune(t, density!.Value, random: true, generator)).ToArray()), weights).sum(0L),
            "ties" => Elected(stack(tasks.Select(t => Prune(t, density!.Value, random: false, generator)).ToArray()), weights, sign),
            "dare_ties" => Elected(stack(tasks.Select(t => Prune(t, density!.Value, random: true, generator)).ToArray()), weights, sign),
            _ => throw new PeftSharpException($"merging: unknown method \"{method}\" (expected {string.Join(", ", Methods)})"),
        };
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Keeps a <paramref name="density"/> fraction of the entries: the largest by magnitude (⌊density·n⌋ of them), or
    /// each with probability density (DARE), the survivors then divided by density unless <paramref name="rescale"/>
    /// is false. Density ≥ 1 keeps everything unchanged.
    /// </summary>
    public static Tensor Prune(Tensor task, double density, bool random, Generator? generator = null, bool rescale = true)
    {
        if (density < 0) throw new PeftSharpException($"merging: density must be in (0, 1], got {density}");
        if (density >= 1) return task.alias();
        if (random)
        {
            using var p = full_like(task, density);
            using var mask = bernoulli(p, generator);
            var kept = task.mul(mask);
            return rescale ? kept.div_(density) : kept;
        }
        long k = (long)(density * task.numel());
        using var flat = task.reshape(-1);
        using var keep = zeros_like(flat);
        if (k > 0)
        {
            var (_, indices) = flat.abs().topk((int)k);
            using (indices) keep.index_fill_(0, indices, 1.0);
        }
        using var shaped = keep.reshape(task.shape);
        return task.mul(shaped);
    }

    /// <summary>
    /// TIES' sign election over tasks stacked on dimension 0: per entry, the sign of the sum of the values
    /// (<see cref="MajoritySign.Total"/>) or of the signs (<see cref="MajoritySign.Frequency"/>), zero counting as
    /// positive; true where a task's sign equals it.
    /// </summary>
    public static Tensor MajoritySignMask(Tensor stacked, MajoritySign method)
    {
        using var scope = NewDisposeScope();
        var signs = stacked.sign();
        var magnitude = method == MajoritySign.Total ? stacked.sum(0L) : signs.sum(0L);
        var majority = where(magnitude.ge(0), 1.0f, -1.0f).to_type(stacked.dtype);
        return signs.eq(majority).MoveToOuterDisposeScope();
    }

    static Tensor Weighted(Tensor stacked, IReadOnlyList<double> weights)
    {
        var shape = new long[stacked.dim()];
        Array.Fill(shape, 1L);
        shape[0] = weights.Count;
        using var w = tensor(weights.ToArray(), stacked.dtype, stacked.device).view(shape);
        return stacked.mul(w);
    }

    // Sign election on the unweighted tasks, then the mean of the weighted entries that agree with it.
    static Tensor Elected(Tensor stacked, IReadOnlyList<double> weights, MajoritySign sign)
    {
        var mask = MajoritySignMask(stacked, sign);
        var kept = Weighted(stacked, weights).mul(mask).sum(0L);
        return kept.div(mask.sum(0L).to_type(stacked.dtype).clamp_min(1.0));
    }
}

/// <summary>How TIES elects each entry's sign: PEFT's <c>majority_sign_method</c>.</summary>
public enum MajoritySign
{
    /// <summary>"total": the sign of the sum of the task values.</summary>
    Total,
    /// <summary>"frequency": the sign held by more tasks.</summary>
    Frequency,
}
