using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Lora;

/// <summary>Computes a LoRA path <c>lora_B(lora_A(x)) · scaling</c> while recording what it needs (DP-SGD's per-example gradients).</summary>
public interface ILoraGradientTap
{
    /// <param name="x">The layer's input after dropout, in the adapter's dtype.</param>
    Tensor LoraPath(LoraLinear layer, string adapter, Tensor x);
}

/// <summary>DoRA's learned per-output magnitude (PEFT's DoraLinearLayer: one parameter named <c>weight</c>).</summary>
public sealed class DoraMagnitude : nn.Module
{
    /// <summary>The magnitude [out].</summary>
    public Parameter weight;

    /// <summary>A magnitude holding <paramref name="initial"/> (the base weight's row norms).</summary>
    public DoraMagnitude(Tensor initial) : base(nameof(DoraMagnitude))
    {
        weight = new Parameter(initial);
        RegisterComponents();
    }
}

/// <summary>
/// LoRA on one linear layer (nn.Linear or GPT-2 Conv1D), as PEFT's <c>lora.Linear</c>:
/// <c>y = base(x) + lora_B(lora_A(dropout(x))) · scaling</c> summed over the active adapters, with
/// A ∈ ℝ^{r×in} and B ∈ ℝ^{out×r}. Parameters hang off the host layer under PEFT's names
/// (<c>lora_A.{adapter}.weight</c>, <c>lora_B.{adapter}.weight</c>, <c>lora_magnitude_vector.{adapter}.weight</c>),
/// so several adapters live side by side and are switched by name. QA-LoRA adapters (use_qalora) pool the input per
/// group of qalora_group_size columns before lora_A (see docs/qa-lora.md).
/// </summary>
public sealed class LoraLinear : LoraLayer
{
    readonly AdapterContainer<Linear> loraA = new();
    readonly AdapterContainer<Linear> loraB = new();
    AdapterContainer<DoraMagnitude>? magnitude;
    // DoRA merges scale rows by m/‖W + ΔW‖; remembered so unmerge restores W exactly.
    readonly Dictionary<string, Tensor> doraFactors = new(StringComparer.Ordinal);
    // DyLoRA: adapters evaluated or trained at a truncated rank b ≤ r (first b rows of A, columns of B, scaling α/b).
    readonly Dictionary<string, int> truncatedRank = new(StringComparer.Ordinal);
    readonly HashSet<string> frozenTruncation = new(StringComparer.Ordinal);
    readonly Dictionary<string, int> mergedRank = new(StringComparer.Ordinal);

    /// <summary>Attaches a LoRA layer (no adapters yet) to <paramref name="host"/>.</summary>
    public LoraLinear(Linear host)
    {
        Host = host;
        host.register_module("lora_A", loraA);
        host.register_module("lora_B", loraB);
        host.AddTuner(this);
    }

    /// <summary>The adapted linear layer.</summary>
    public Linear Host { get; }

    /// <summary>The rank an adapter currently runs at (its full r unless truncated).</summary>
    public int RankOf(string adapter) => truncatedRank.TryGetValue(adapter, out var b) ? b : settings[adapter].Rank;

    /// <summary>
    /// Runs an adapter at rank b (DyLoRA): A[:b, :], B[:, :b], scaling α/b; null restores the full rank. With
    /// <paramref name="frozen"/>, only row b of A and column b of B receive gradient (DyLoRA's frozen mode). A merged
    /// adapter is unmerged first, so the base weight never keeps a delta of another rank.
    /// </summary>
    public void SetRank(string adapter, int? rank, bool frozen = false)
    {
        var s = settings[adapter];
        if (rank is int b && (b < 1 || b > s.Rank))
            throw new PeftSharpException($"--rank: {b} is outside 1..{s.Rank} for adapter \"{adapter}\"");
        if (merged.Contains(adapter) && RankOf(adapter) != (rank ?? s.Rank)) Unmerge();
        if (rank is int r && r != s.Rank) truncatedRank[adapter] = r; else truncatedRank.Remove(adapter);
        if (frozen) frozenTruncation.Add(adapter); else frozenTruncation.Remove(adapter);
    }

    /// <summary>The factors and scaling an adapter uses at its current rank.</summary>
    (Tensor A, Tensor B, double Scaling) Factors(string adapter)
    {
        var s = settings[adapter];
        Tensor a = loraA[adapter].weight, b = loraB[adapter].weight;
        if (!truncatedRank.TryGetValue(adapter, out int rank)) return (a, b, s.Scaling);
        a = a.narrow(0, 0, rank);
        b = b.narrow(1, 0, rank);
        if (frozenTruncation.Contains(adapter) && rank > 1)
        {
            // Earlier components are frozen: gradient reaches only the newest row/column.
            a = cat([a.narrow(0, 0, rank - 1).detach(), a.narrow(0, rank - 1, 1)], 0);
            b = cat([b.narrow(1, 0, rank - 1).detach(), b.narrow(1, rank - 1, 1)], 1);
        }
        return (a, b, s.ScalingAt(rank));
    }

    Tensor LoraPath(string adapter, Tensor x)
    {
        var (a, b, scaling) = Factors(adapter);
        var h = nn.functional.linear(nn.functional.linear(x, a), b, loraB[adapter].bias);
        return h.mul_(scaling);
    }

    /// <summary>
    /// While set (DP-SGD), training forwards of plain LoRA adapters run through the tap, which keeps what per-example
    /// gradients need (see <see cref="Privacy.PerExampleGradients"/>). The output is the same.
    /// </summary>
    public ILoraGradientTap? GradientTap { get; set; }

    /// <summary>lora_A of an adapter: [in] → [r].</summary>
    public Linear A(string adapter) => loraA[adapter];
    /// <summary>lora_B of an adapter: [r] → [out].</summary>
    public Linear B(string adapter) => loraB[adapter];
    /// <summary>DoRA's magnitude [out] of an adapter, or null when it does not use DoRA.</summary>
    public Parameter? Magnitude(string adapter) => magnitude is not null && magnitude.Contains(adapter) ? magnitude[adapter].weight : null;

    /// <inheritdoc/>
    public override void AddAdapter(string name, LoraAdapterSettings s, ScalarType dtype = ScalarType.Float32, Generator? generator = null)
    {
        if (s.Rank <= 0) throw new PeftSharpException($"lora r must be a positive integer, got {s.Rank}");
        var device = Host.weight.device;
        long inA = Host.InFeatures;
        if (s.QaloraGroupSize is int group)
        {
            if (group <= 0 || Host.InFeatures % group != 0)
                throw new PeftSharpException($"qalora_group_size {group} does not divide in_features {Host.InFeatures}");
            if (s.UseDora) throw new PeftSharpException("use_qalora cannot be combined with use_dora");
            inA = Host.InFeatures / group;
        }
        var a = new Linear(inA, s.Rank, hasBias: false, fanInFanOut: false, dtype, device);
        var b = new Linear(s.Rank, Host.OutFeatures, hasBias: s.LoraBias, fanInFanOut: false, dtype, device);
        loraA.Add(name, a);
        loraB.Add(name, b);
        settings[name] = s;
        if (device.type != DeviceType.META) Initialize(name, s, generator);
        if (s.UseDora)
        {
            if (magnitude is null)
            {
                magnitude = new AdapterContainer<DoraMagnitude>();
                Host.register_module("lora_magnitude_vector", magnitude);
            }
            using var _ = no_grad();
            var m = device.type == DeviceType.META
                ? empty([Host.OutFeatures], dtype, device)
                : RowNorms(BaseWeight32(), DeltaWeight(name)).to_type(dtype);
            magnitude.Add(name, new DoraMagnitude(m));
        }
    }

    /// <inheritdoc/>
    public override void DeleteAdapter(string name)
    {
        if (merged.Contains(name)) throw new PeftSharpException($"adapter \"{name}\" is merged; unmerge it before deleting it");
        loraA.Remove(name);
        loraB.Remove(name);
        magnitude?.Remove(name);
        settings.Remove(name);
        ActiveAdapters = ActiveAdapters.Where(a => a != name).ToArray();
    }

    /// <summary>Initial A and B as <c>init_lora_weights</c> says (PEFT's reset_lora_parameters / pissa_init / olora_init).</summary>
    void Initialize(string name, LoraAdapterSettings s, Generator? gen)
    {
        using var _ = no_grad();
        var a = loraA[name];
        var b = loraB[name];
        switch (s.Init)
        {
            case "true":
                // kaiming_uniform_(a=√5): U(−1/√fan_in, 1/√fan_in); B = 0 so the adapter starts as the identity.
                Uniform(a.weight, 1.0 / Math.Sqrt(a.InFeatures), gen);
                b.weight.zero_();
                b.bias?.zero_();
                break;
            case "gaussian":
                a.weight.copy_(randn(a.weight.shape, ScalarType.Float32, generator: gen).mul_(1.0 / s.Rank));
                b.weight.zero_();
                b.bias?.zero_();
                break;
            case "false":
                // nn.Linear's own initialisation for both factors (B ≠ 0): for tests and debugging, as PEFT.
                Uniform(a.weight, 1.0 / Math.Sqrt(a.InFeatures), gen);
                Uniform(b.weight, 1.0 / Math.Sqrt(s.Rank), gen);
                if (b.bias is not null) Uniform(b.bias, 1.0 / Math.Sqrt(s.Rank), gen);
                break;
            case "olora" when s.QaloraGroupSize is null:
                InitOlora(name, s);
                break;
            case "loftq" when s.QaloraGroupSize is null:
                Quantization.LoftQ.InitializeAdapter(Host, a, b, s.Rank, s.Scaling, s.LoftqBits, s.LoftqIter);
                break;
            default:
                if (s.QaloraGroupSize is not null) throw new PeftSharpException($"init_lora_weights \"{s.Init}\" cannot be used with use_qalora (expected true, false or gaussian)");
                if (s.Init.StartsWith("pissa", StringComparison.Ordinal)) { InitPissa(name, s); break; }
                throw new PeftSharpException($"init_lora_weights \"{s.Init}\" is not supported (expected true, false, gaussian, pissa, pissa_niter_N, olora or loftq)");
        }
    }

    static void Uniform(Tensor t, double bound, Generator? gen) =>
        t.copy_(rand(t.shape, ScalarType.Float32, generator: gen).mul_(2 * bound).sub_(bound));

    /// <summary>PiSSA: A, B from the top-r singular triplets of W; the base keeps the residual W − s·B·A.</summary>
    void InitPissa(string name, LoraAdapterSettings s)
    {
        using var scope = NewDisposeScope();
        var w = BaseWeight32();
        var (u, sv, vh) = linalg.svd(w, fullMatrices: false);
        var sr = sv.narrow(0, 0, s.Rank).div(s.Scaling).sqrt();
        var a = sr.unsqueeze(1).mul(vh.narrow(0, 0, s.Rank));          // diag(√S_r) · Vhᵣ   [r, in]
        var b = u.narrow(1, 0, s.Rank).mul(sr.unsqueeze(0));            // U_r · diag(√S_r)   [out, r]
        loraA[name].weight.copy_(a);
        loraB[name].weight.copy_(b);
        SetBaseWeight32(w.sub(b.matmul(a).mul(s.Scaling)));
    }

    /// <summary>OLoRA: A = R_r, B = Q_r from W = QR; the base keeps W − s·B·A.</summary>
    void InitOlora(string name, LoraAdapterSettings s)
    {
        using var scope = NewDisposeScope();
        var w = BaseWeight32();
        var (q, r) = linalg.qr(w);
        var a = r.narrow(0, 0, s.Rank);
        var b = q.narrow(1, 0, s.Rank);
        loraA[name].weight.copy_(a);
        loraB[name].weight.copy_(b);
        SetBaseWeight32(w.sub(b.matmul(a).mul(s.Scaling)));
    }

    /// <summary>The base weight as float32 [out, in].</summary>
    Tensor BaseWeight32() => Host.WeightOutIn.to_type(ScalarType.Float32);

    // A 4-bit base is re-quantized with its own settings (as PEFT's bnb merge), which rounds W to the 4-bit grid.
    void SetBaseWeight32(Tensor outIn) => Host.SetWeightOutIn(outIn);

    /// <summary>
    /// ΔW = s·B·A as float32 [out, in], at the adapter's current rank; for QA-LoRA, s·B·A [out, in/group] spread over
    /// the columns of each group (constant within a group).
    /// </summary>
    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = NewDisposeScope();
        var (a, b, scaling) = Factors(adapter);
        var delta = b.to_type(ScalarType.Float32).matmul(a.to_type(ScalarType.Float32)).mul_(scaling);
        if (settings[adapter].QaloraGroupSize is int group)
        {
            // QA-LoRA: column g of B·A acts on the pooled group g, i.e. on each of its columns with weight (in/group)/group.
            long groups = Host.InFeatures / group;
            delta = delta.mul_((double)groups / group).repeat_interleave(group, 1);
        }
        return delta.MoveToOuterDisposeScope();
    }

    static Tensor RowNorms(Tensor w, Tensor delta) => linalg.vector_norm(w.add(delta), dims: [1]);

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x)
    {
        if (Disabled)
        {
            if (Merged) Unmerge();
            return Host.BaseForward(x);
        }
        if (RowAdapters is not null) return MixedBatchForward(x, RowAdapters);
        if (Merged) return Host.BaseForward(x);
        using var scope = NewDisposeScope();
        var result = Host.BaseForward(x);
        var resultDType = result.dtype;
        foreach (var name in ActiveAdapters)
        {
            if (!settings.TryGetValue(name, out var s)) continue;
            var xa = x.to_type(loraA[name].weight.dtype);
            if (!s.UseDora)
            {
                var dropped = Pool(Dropout(xa, s), s);
                var path = GradientTap is { } tap && is_grad_enabled()
                    ? tap.LoraPath(this, name, dropped)
                    : LoraPath(name, dropped);
                result = result.add(path.to_type(resultDType));
            }
            else
            {
                result = result.add(DoraDelta(name, s, xa, result).to_type(resultDType));
            }
        }
        return result.MoveToOuterDisposeScope();
    }

    Tensor Dropout(Tensor x, LoraAdapterSettings s) =>
        s.Dropout > 0 && Host.training ? nn.functional.dropout(x, s.Dropout, training: true) : x;

    /// <summary>
    /// QA-LoRA's input to lora_A, as PEFT's QALoraLinearVariant: the mean of each group of qalora_group_size input
    /// columns, times the number of groups. Plain LoRA: x unchanged.
    /// </summary>
    Tensor Pool(Tensor x, LoraAdapterSettings s)
    {
        if (s.QaloraGroupSize is not int group) return x;
        long groups = x.shape[^1] / group;
        var shape = x.shape[..^1].Concat([groups, (long)group]).ToArray();
        return x.reshape(shape).mean([-1L]).mul(groups);
    }

    /// <summary>
    /// DoRA's addition to the base output: (m/‖W + ΔW‖ − 1)·(x·Wᵀ) + (m/‖W + ΔW‖)·s·B·A·x, the norm taken per output
    /// row and detached (as the paper and PEFT do). Adding it to base(x) gives bias + m/‖W+ΔW‖·(W + ΔW)·x.
    /// </summary>
    Tensor DoraDelta(string name, LoraAdapterSettings s, Tensor x, Tensor baseResult)
    {
        using var scope = NewDisposeScope();
        var w = BaseWeight32();
        Tensor norm;
        using (no_grad()) norm = RowNorms(w, DeltaWeight(name));
        var scale = magnitude![name].weight.to_type(ScalarType.Float32).div(norm).view(1, -1);
        Tensor baseOut;
        if (s.Dropout > 0 && Host.training)
        {
            x = Dropout(x, s);
            baseOut = nn.functional.linear(x.to_type(ScalarType.Float32), w);
        }
        else
        {
            baseOut = baseResult.to_type(ScalarType.Float32);
            if (Host.bias is not null) baseOut = baseOut.sub(Host.bias.to_type(ScalarType.Float32));
        }
        var loraOut = LoraPath(name, x).to_type(ScalarType.Float32);
        var result = scale.sub(1).mul(baseOut).add(scale.mul(loraOut));
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One adapter per batch row (PEFT's adapter_names). The base layer runs once over the whole batch. Plain LoRA
    /// adapters are then applied as one gathered computation, as S-LoRA/Punica do: the factors of the adapters in
    /// the batch are stacked (zero-padded to the largest rank), each row picks its own with an index, and two batched
    /// matrix products give every row's low-rank term, however many adapters the batch mixes. DoRA, QA-LoRA and
    /// adapters with a LoRA bias are applied group by group.
    /// </summary>
    Tensor MixedBatchForward(Tensor x, IReadOnlyList<string> rowAdapters)
    {
        if (Merged) throw new PeftSharpException("adapter_names cannot be used while adapters are merged; unmerge first");
        if (rowAdapters.Count != x.shape[0])
            throw new PeftSharpException($"adapter_names has {rowAdapters.Count} entries for a batch of {x.shape[0]} rows");
        using var scope = NewDisposeScope();
        var result = Host.BaseForward(x);
        var present = rowAdapters.Where(settings.ContainsKey).Distinct().ToList();
        if (present.Count == 0) return result.MoveToOuterDisposeScope();
        var gathered = present.Where(n => !settings[n].UseDora && settings[n].QaloraGroupSize is null && loraB[n].bias is null && (settings[n].Dropout == 0 || !Host.training)).ToList();
        if (gathered.Count > 0) result = result.add(GatheredLoraPath(x, rowAdapters, gathered).to_type(result.dtype));
        var grouped = present.Except(gathered).ToHashSet();
        if (grouped.Count == 0) return result.MoveToOuterDisposeScope();
        var baseResult = result;
        result = result.clone();
        foreach (var group in rowAdapters.Select((name, row) => (name, row)).Where(p => grouped.Contains(p.name)).GroupBy(p => p.name))
        {
            var s = settings[group.Key];
            var rows = tensor(group.Select(p => (long)p.row).ToArray(), device: x.device);
            var sub = x.index_select(0, rows).to_type(loraA[group.Key].weight.dtype);
            var h = s.UseDora ? DoraDelta(group.Key, s, sub, Host.BaseForward(x.index_select(0, rows)))
                              : LoraPath(group.Key, Pool(Dropout(sub, s), s));
            result.index_add_(0, rows, h.to_type(result.dtype), 1);
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>s·B·A·x for each row with its own adapter among <paramref name="adapters"/> (other rows get 0).</summary>
    Tensor GatheredLoraPath(Tensor x, IReadOnlyList<string> rowAdapters, IReadOnlyList<string> adapters)
    {
        int rank = adapters.Max(RankOf);
        var position = new Dictionary<string, int>(StringComparer.Ordinal);
        var aList = new List<Tensor>();
        var bList = new List<Tensor>();
        var scaling = new List<float>();
        foreach (var name in adapters)
        {
            var (a, b, s) = Factors(name);
            long r = a.shape[0];
            if (r < rank)
            {
                a = cat([a, zeros(rank - r, a.shape[1], a.dtype, a.device)], 0);
                b = cat([b, zeros(b.shape[0], rank - r, b.dtype, b.device)], 1);
            }
            position[name] = aList.Count;
            aList.Add(a);
            bList.Add(b);
            scaling.Add((float)s);
        }
        var dtype = aList[0].dtype;
        bool anyOther = rowAdapters.Any(n => !position.ContainsKey(n));
        if (anyOther)
        {
            // Rows without a gathered adapter pick a zero entry.
            aList.Add(zeros_like(aList[0]));
            bList.Add(zeros_like(bList[0]));
            scaling.Add(0f);
        }
        var stackA = stack(aList.Select(t => t.to_type(dtype)), 0);              // [k, r, in]
        var stackB = stack(bList.Select(t => t.to_type(dtype)), 0);              // [k, out, r]
        var index = tensor(rowAdapters.Select(n => (long)position.GetValueOrDefault(n, aList.Count - 1)).ToArray(), device: x.device);
        long rows = x.shape[0];
        var x3 = x.to_type(dtype).reshape(rows, -1, x.shape[^1]);              // [B, T, in]
        var h = x3.bmm(stackA.index_select(0, index).transpose(1, 2));          // [B, T, r]
        h = h.bmm(stackB.index_select(0, index).transpose(1, 2));               // [B, T, out]
        h = h.mul(tensor(scaling.ToArray(), device: x.device).index_select(0, index).to_type(dtype).view(rows, 1, 1));
        var shape = x.shape.ToArray();
        shape[^1] = h.shape[^1];
        return h.reshape(shape);
    }

    /// <summary>
    /// Folds adapters into the base weight (W += ΔW, or W ← m/‖W+ΔW‖·(W+ΔW) for DoRA). With <paramref name="safe"/>,
    /// the result is computed on a copy and refused if it holds NaN or ±∞.
    /// </summary>
    public override void Merge(IEnumerable<string>? adapters = null, bool safe = false)
    {
        using var _ = no_grad();
        foreach (var name in (adapters ?? ActiveAdapters).ToList())
        {
            if (!settings.TryGetValue(name, out var s) || merged.Contains(name)) continue;
            using var scope = NewDisposeScope();
            var w = BaseWeight32();
            var delta = DeltaWeight(name);
            Tensor updated;
            if (s.UseDora)
            {
                var factor = magnitude![name].weight.to_type(ScalarType.Float32).div(RowNorms(w, delta)).view(-1, 1);
                updated = w.add(delta).mul(factor);
                doraFactors[name] = factor.detach().clone().DetachFromDisposeScope();
            }
            else updated = w.add(delta);
            if (safe && !updated.isfinite().all().item<bool>())
                throw new PeftSharpException($"merging adapter \"{name}\" would put NaN or infinite values into the base weight; not merged");
            SetBaseWeight32(updated);
            if (Host.bias is not null && loraB[name].bias is Parameter lb) Host.bias.add_(lb.mul(Factors(name).Scaling).to_type(Host.bias.dtype));
            mergedRank[name] = RankOf(name);
            merged.Add(name);
        }
    }

    /// <summary>Undoes <see cref="Merge"/>, most recent adapter first.</summary>
    public override void Unmerge()
    {
        using var _ = no_grad();
        while (merged.Count > 0)
        {
            var name = merged[^1];
            using var scope = NewDisposeScope();
            if (RankOf(name) != mergedRank[name])
                throw new InvalidOperationException($"adapter {name} was merged at rank {mergedRank[name]} but now runs at rank {RankOf(name)}");
            var w = BaseWeight32();
            var delta = DeltaWeight(name);
            if (doraFactors.Remove(name, out var factor))
            {
                w = w.div(factor).sub(delta);
                factor.Dispose();
            }
            else w = w.sub(delta);
            SetBaseWeight32(w);
            if (Host.bias is not null && loraB[name].bias is Parameter lb) Host.bias.sub_(lb.mul(Factors(name).Scaling).to_type(Host.bias.dtype));
            mergedRank.Remove(name);
            merged.RemoveAt(merged.Count - 1);
        }
    }

    /// <inheritdoc/>
    public override void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule("lora_A");
        Host.RemoveSubmodule("lora_B");
        Host.RemoveSubmodule("lora_magnitude_vector");
    }
}
