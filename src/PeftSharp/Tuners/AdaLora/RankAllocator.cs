using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>
/// AdaLoRA's budget allocation (PEFT's <c>RankAllocator</c>) for the trainable adapter. Each step it smooths the
/// sensitivity I = |p ⊙ ∇p| of every entry of A, E and B with an EMA (β₁) and its uncertainty U = |I − Ī| with another
/// (β₂); the score of an entry is Ī·Ū. A singular triplet i of a layer scores
/// S_i = score(E_i) + mean_j score(A_ij) + mean_j score(B_ji). At an allocation, the budget b(t) triplets with the highest
/// scores (over all layers) are kept and the others are pruned by setting their E entry to 0.
/// </summary>
/// <remarks>
/// The budget follows PEFT's cubic schedule: b(t) = B₀ (the initial total rank) for t ≤ tinit,
/// b(t) = ⌊(B₀ − B_T)·(1 − (t − tinit)/(T − tfinal − tinit))³ + B_T⌋ for tinit &lt; t ≤ T − tfinal (allocating every
/// deltaT steps), and B_T = target_r × layers afterwards.
/// </remarks>
public sealed class RankAllocator
{
    /// <summary>Name of the file <see cref="Save"/> writes into a trainer checkpoint.</summary>
    public const string StateFileName = "adalora_allocator.safetensors";

    readonly AdaLoraModel model;
    readonly AdaLoraConfig config;
    readonly Dictionary<string, Tensor> expAvgIpt = new(StringComparer.Ordinal);
    readonly Dictionary<string, Tensor> expAvgUnc = new(StringComparer.Ordinal);

    /// <summary>
    /// An allocator for <paramref name="adapter"/> of <paramref name="model"/>, with the budget schedule of <paramref name="config"/> (init_r, target_r, tinit, tfinal, deltaT, beta1, beta2).
    /// </summary>
    /// <exception cref="PeftSharpException">beta1 or beta2 outside (0, 1).</exception>
    public RankAllocator(AdaLoraModel model, AdaLoraConfig config, string adapter)
    {
        if (!(config.Beta1 > 0 && config.Beta1 < 1)) throw new PeftSharpException($"beta1 must be in (0, 1), got {config.Beta1}");
        if (!(config.Beta2 > 0 && config.Beta2 < 1)) throw new PeftSharpException($"beta2 must be in (0, 1), got {config.Beta2}");
        this.model = model;
        this.config = config;
        Adapter = adapter;
        var layers = Layers().ToList();
        InitialBudget = layers.Sum(l => l.Layer.RankOf(adapter));
        TargetBudget = config.TargetR * layers.Count;
    }

    /// <summary>The adapter whose ranks are allocated.</summary>
    public string Adapter { get; }
    /// <summary>The total rank before any pruning (PEFT's init_bgt).</summary>
    public int InitialBudget { get; }
    /// <summary>The total rank after the budgeting phase: target_r × adapted layers (PEFT's target_bgt).</summary>
    public int TargetBudget { get; }

    IEnumerable<(string Path, SvdLinear Layer)> Layers() =>
        model.Layers.Where(l => l.Value.Contains(Adapter)).Select(l => (l.Key, l.Value));

    IEnumerable<(string Name, Tensor Param)> Factors()
    {
        foreach (var (path, layer) in Layers())
        {
            yield return ($"{path}.lora_A", layer.A(Adapter));
            yield return ($"{path}.lora_B", layer.B(Adapter));
            yield return ($"{path}.lora_E", layer.E(Adapter));
        }
    }

    /// <summary>PEFT's <c>budget_schedule</c>: the total rank allowed after step <paramref name="step"/>, and whether to allocate then.</summary>
    public (int Budget, bool Mask) BudgetSchedule(long step)
    {
        int tinit = config.Tinit, tfinal = config.Tfinal;
        long total = TotalStep;
        if (step <= tinit) return (InitialBudget, false);
        if (step > total - tfinal) return (TargetBudget, true);
        double mulCoeff = 1 - (double)(step - tinit) / (total - tfinal - tinit);
        int budget = (int)((InitialBudget - TargetBudget) * Math.Pow(mulCoeff, 3) + TargetBudget);
        return (budget, step % config.DeltaT == 0);
    }

    long TotalStep => config.TotalStep is int t && t > 0 ? t
        : throw new PeftSharpException("AdaLoRA: total_step must be set (> 0) before training");

    /// <summary>PEFT's <c>update_ipt</c>: folds the current |p ⊙ ∇p| into the EMAs. Parameters without a gradient are skipped.</summary>
    public void UpdateImportance()
    {
        using var _ = no_grad();
        foreach (var (name, p) in Factors())
        {
            if (p.grad is not Tensor grad) continue;
            using var scope = NewDisposeScope();
            var ipt = p.mul(grad).abs();
            var avg = expAvgIpt.TryGetValue(name, out var a) && a.shape.SequenceEqual(p.shape) ? a : zeros_like(p);
            var unc = expAvgUnc.TryGetValue(name, out var u) && u.shape.SequenceEqual(p.shape) ? u : zeros_like(p);
            var newAvg = avg.mul(config.Beta1).add(ipt.mul(1 - config.Beta1));
            var newUnc = unc.mul(config.Beta2).add(ipt.sub(newAvg).abs().mul(1 - config.Beta2));
            Set(expAvgIpt, name, newAvg);
            Set(expAvgUnc, name, newUnc);
        }
    }

    static void Set(Dictionary<string, Tensor> dict, string name, Tensor value)
    {
        if (dict.Remove(name, out var old) && !ReferenceEquals(old, value)) old.Dispose();
        dict[name] = value.DetachFromDisposeScope();
    }

    /// <summary>PEFT's <c>reset_ipt</c>: forgets the EMAs.</summary>
    public void ResetImportance()
    {
        foreach (var t in expAvgIpt.Values.Concat(expAvgUnc.Values)) t.Dispose();
        expAvgIpt.Clear();
        expAvgUnc.Clear();
    }

    /// <summary>Ī·Ū for one factor (zeros if it has no statistics yet).</summary>
    Tensor ElementScore(string name, Tensor p) =>
        expAvgIpt.TryGetValue(name, out var a) && expAvgUnc.TryGetValue(name, out var u) ? a.mul(u) : zeros_like(p);

    /// <summary>The score S_i of every triplet of every layer, as [r] vectors by module path.</summary>
    public Dictionary<string, Tensor> TripletScores()
    {
        var scores = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (path, layer) in Layers())
        {
            var a = ElementScore($"{path}.lora_A", layer.A(Adapter)).mean([1], keepdim: true);          // [r, 1]
            var b = ElementScore($"{path}.lora_B", layer.B(Adapter)).mean([0], keepdim: false).view(-1, 1); // [r, 1]
            var e = ElementScore($"{path}.lora_E", layer.E(Adapter));                                    // [r, 1]
            scores[path] = e.view(-1).add(cat([a, b], 1).sum(1));
        }
        return scores;
    }

    /// <summary>
    /// PEFT's <c>mask_to_budget</c>: keeps the <paramref name="budget"/> best triplets overall, sets E of the others to
    /// 0, and returns the allocation (module path + ".lora_E" → kept flags). Triplets whose score ties the threshold are
    /// pruned too, as in PEFT.
    /// </summary>
    public OrderedDictionary<string, IReadOnlyList<bool>> MaskToBudget(int budget)
    {
        using var scope = NewDisposeScope();
        var scores = TripletScores();
        var pattern = new OrderedDictionary<string, IReadOnlyList<bool>>(StringComparer.Ordinal);
        long k = InitialBudget - budget;
        Tensor? threshold = null;
        if (k > 0 && scores.Count > 0)
        {
            var all = cat(scores.Values.ToList(), 0);
            threshold = all.kthvalue(Math.Min(k, all.shape[0]), 0).values;
        }
        using var _ = no_grad();
        foreach (var (path, layer) in Layers())
        {
            var pruned = threshold is null ? zeros(scores[path].shape, ScalarType.Bool) : scores[path].le(threshold);
            layer.E(Adapter).masked_fill_(pruned.view(-1, 1).to(layer.E(Adapter).device), 0.0);
            pattern[$"{path}.lora_E"] = pruned.logical_not().cpu().data<bool>().ToArray();
        }
        return pattern;
    }

    /// <summary>PEFT's <c>RankAllocator.update_and_allocate</c>: update the scores (before the final phase), then allocate if the schedule says so.</summary>
    public (int Budget, OrderedDictionary<string, IReadOnlyList<bool>>? Pattern) UpdateAndAllocate(long step, bool forceMask = false)
    {
        if (step < TotalStep - config.Tfinal) UpdateImportance();
        var (budget, mask) = BudgetSchedule(step);
        return (budget, mask || forceMask ? MaskToBudget(budget) : null);
    }

    /// <summary>PEFT's <c>mask_using_rank_pattern</c>: zeroes E of the triplets the pattern prunes.</summary>
    public void MaskUsingRankPattern(IReadOnlyDictionary<string, IReadOnlyList<bool>> pattern)
    {
        using var _ = no_grad();
        foreach (var (path, layer) in Layers())
        {
            var keep = AdaLoraModel.PatternFor(pattern, path, Adapter)
                ?? throw new PeftSharpException($"rank_pattern has no entry for {path}.lora_E");
            var e = layer.E(Adapter);
            if (keep.Count != e.shape[0]) throw new PeftSharpException($"rank_pattern has {keep.Count} flags for {path}, which has rank {e.shape[0]}");
            using var scope = NewDisposeScope();
            var pruned = tensor(keep.Select(k => !k).ToArray(), device: e.device).view(-1, 1);
            e.masked_fill_(pruned, 0.0);
        }
    }

    /// <summary>Writes the EMAs (for resuming a run exactly; PEFT keeps them in memory only).</summary>
    public void Save(string path)
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (name, t) in expAvgIpt) tensors.Add(new($"{name}.exp_avg_ipt", t));
        foreach (var (name, t) in expAvgUnc) tensors.Add(new($"{name}.exp_avg_unc", t));
        using var scope = NewDisposeScope();
        SafetensorsWriter.Save(path, tensors.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.cpu().contiguous())).ToList());
    }

    /// <summary>Restores what <see cref="Save"/> wrote; a missing file means no statistics yet.</summary>
    public void Load(string path)
    {
        ResetImportance();
        if (!File.Exists(path)) return;
        using var file = SafetensorsFile.Open(path);
        foreach (var key in file.Tensors.Keys)
        {
            var target = key.EndsWith(".exp_avg_ipt", StringComparison.Ordinal) ? expAvgIpt
                : key.EndsWith(".exp_avg_unc", StringComparison.Ordinal) ? expAvgUnc
                : throw new PeftSharpException($"{path}: unexpected tensor '{key}'");
            string name = key[..key.LastIndexOf('.')];
            var device = Factors().FirstOrDefault(f => f.Name == name).Param?.device
                ?? throw new PeftSharpException($"{path}: tensor '{key}' belongs to no AdaLoRA layer of this model");
            target[name] = file.Read(key).to(device).DetachFromDisposeScope();
        }
    }
}
