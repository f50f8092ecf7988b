using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>
/// AdaLoRA on one linear layer (nn.Linear or GPT-2 Conv1D), as PEFT's <c>adalora.SVDLinear</c>: the update is kept in
/// SVD form ΔW = P·Λ·Q with Q = <c>lora_A</c> [r, in] (right singular vectors), Λ = <c>lora_E</c> [r, 1] (singular
/// values), P = <c>lora_B</c> [out, r] (left singular vectors), and
/// <c>y = base(x) + (dropout(x) · (A ⊙ E)ᵀ · Bᵀ) · scaling / (ranknum + 1e-5)</c>, where scaling = lora_alpha
/// (r when lora_alpha ≤ 0) and ranknum = the initial rank. Pruning a triplet sets its entry of E to zero.
/// Parameters hang off the host under PEFT's names: <c>lora_A.{adapter}</c>, <c>lora_B.{adapter}</c>,
/// <c>lora_E.{adapter}</c>, and the frozen <c>ranknum.{adapter}</c> [1].
/// </summary>
public sealed class SvdLinear : ILayerTuner
{
    /// <summary>PEFT's constant in the denominator.</summary>
    public const double RanknumEpsilon = 1e-5;

    ParameterDict loraA = new(), loraB = new(), loraE = new(), ranknum = new();
    readonly Dictionary<string, Settings> settings = new(StringComparer.Ordinal);
    readonly List<string> merged = [];

    sealed record Settings(int Rank, double Alpha, double Dropout)
    {
        /// <summary>PEFT: <c>lora_alpha if lora_alpha > 0 else float(r)</c>.</summary>
        public double Scaling => Alpha > 0 ? Alpha : Rank;
    }

    /// <summary>Attaches an AdaLoRA layer (no adapters yet) to <paramref name="host"/>.</summary>
    public SvdLinear(Linear host)
    {
        Host = host;
        Register();
        host.AddTuner(this);
    }

    /// <summary>The adapted base layer.</summary>
    public Linear Host { get; }
    /// <summary>Adapter names on this layer.</summary>
    public IEnumerable<string> Adapters => settings.Keys;
    /// <summary>Adapters that act in the forward.</summary>
    public IReadOnlyList<string> ActiveAdapters { get; set; } = [];
    /// <summary>Adapters folded into the base weight, in merge order.</summary>
    public IReadOnlyList<string> MergedAdapters => merged;
    /// <summary>Whether any adapter is merged.</summary>
    public bool Merged => merged.Count > 0;
    /// <summary>While true, the layer computes its base output only (merged adapters are unmerged first, as PEFT).</summary>
    public bool Disabled { get; set; }

    /// <summary>Whether the layer has adapter <paramref name="adapter"/>.</summary>
    public bool Contains(string adapter) => settings.ContainsKey(adapter);
    /// <summary>Right singular vectors Q [r, in].</summary>
    public Parameter A(string adapter) => loraA[adapter];
    /// <summary>Left singular vectors P [out, r].</summary>
    public Parameter B(string adapter) => loraB[adapter];
    /// <summary>Singular values Λ [r, 1]; pruned triplets hold 0.</summary>
    public Parameter E(string adapter) => loraE[adapter];
    /// <summary>The frozen rank the update is divided by (the initial rank; kept when the layer is resized).</summary>
    public Parameter Ranknum(string adapter) => ranknum[adapter];
    /// <summary>Rows of A (the rank the factors have, pruned triplets included until the layer is resized).</summary>
    public int RankOf(string adapter) => settings[adapter].Rank;
    /// <summary>The adapter's scaling: lora_alpha (r when lora_alpha ≤ 0); the forward divides it by ranknum + 1e-5.</summary>
    public double ScalingOf(string adapter) => settings[adapter].Scaling;

    void Register()
    {
        // Dictionaries are rebuilt when adapters are added, resized or deleted: swap them in under the same names.
        foreach (var (name, dict) in new[] { ("lora_A", loraA), ("lora_B", loraB), ("lora_E", loraE), ("ranknum", ranknum) })
        {
            Host.RemoveSubmodule(name);
            Host.register_module(name, dict);
        }
    }

    /// <summary>
    /// PEFT's <c>update_layer</c>: adds (or replaces) an adapter of rank <paramref name="rank"/> with float32 factors
    /// on the host's device. <paramref name="initWeights"/> (PEFT: <c>init_lora_weights</c> truthy): E = 0 and A, B
    /// ~ N(0, 0.02²), so the adapter starts as the identity; otherwise A, E, B ~ N(0, 1).
    /// </summary>
    public void AddAdapter(string name, int rank, double alpha, double dropout = 0.0, bool initWeights = true, Generator? generator = null)
    {
        if (rank < 0) throw new PeftSharpException($"AdaLoRA rank must be 0 or more, got {rank}");
        if (merged.Contains(name)) throw new PeftSharpException($"adapter \"{name}\" is merged; unmerge it before changing it");
        var device = Host.weight.device;
        var dtype = ScalarType.Float32;
        var a = empty([rank, Host.InFeatures], dtype, device);
        var e = empty([rank, 1], dtype, device);
        var b = empty([Host.OutFeatures, rank], dtype, device);
        var rn = full([1], (double)rank, dtype, device);
        if (device.type != DeviceType.META)
        {
            using var _ = no_grad();
            double std = initWeights ? 0.02 : 1.0;
            a.copy_(randn(a.shape, dtype, generator: generator).mul_(std));
            if (initWeights) e.zero_(); else e.copy_(randn(e.shape, dtype, generator: generator));
            b.copy_(randn(b.shape, dtype, generator: generator).mul_(std));
        }
        settings[name] = new Settings(rank, alpha, dropout);
        Replace(name, new Parameter(a), new Parameter(b), new Parameter(e), new Parameter(rn, requires_grad: false));
    }

    void Replace(string name, Parameter? a, Parameter? b, Parameter? e, Parameter? rn)
    {
        loraA = With(loraA, name, a);
        loraB = With(loraB, name, b);
        loraE = With(loraE, name, e);
        ranknum = With(ranknum, name, rn);
        Register();
    }

    static ParameterDict With(ParameterDict dict, string name, Parameter? value)
    {
        var result = new ParameterDict();
        bool placed = false;
        foreach (var key in dict.keys())
        {
            if (key != name) result.Add((key, dict[key]));
            else if (value is not null) { result.Add((key, value)); placed = true; }
        }
        if (!placed && value is not null) result.Add((name, value));
        return result;
    }

    /// <summary>
    /// PEFT's <c>resize_modules_by_rank_pattern</c> for this layer: keeps only the triplets whose flag is true, so the
    /// factors get rank = number of kept triplets. ranknum (hence the scaling) stays as before, so the output is
    /// unchanged when the dropped triplets had E = 0. Gradient tracking of the factors is kept.
    /// </summary>
    public void Resize(string adapter, IReadOnlyList<bool> keep)
    {
        var s = settings[adapter];
        if (keep.Count != s.Rank)
            throw new PeftSharpException($"rank_pattern has {keep.Count} flags for a layer of rank {s.Rank}");
        if (merged.Contains(adapter)) throw new PeftSharpException($"adapter \"{adapter}\" is merged; unmerge it before resizing it");
        int rank = keep.Count(k => k);
        bool grad = loraA[adapter].requires_grad;
        Parameter a, b, e, rn;
        using (no_grad())
        {
            var device = Host.weight.device;
            var rows = tensor(Enumerable.Range(0, keep.Count).Where(i => keep[i]).Select(i => (long)i).ToArray(), ScalarType.Int64, device);
            a = new Parameter(loraA[adapter].index_select(0, rows).contiguous(), grad);
            e = new Parameter(loraE[adapter].index_select(0, rows).contiguous(), grad);
            b = new Parameter(loraB[adapter].index_select(1, rows).contiguous(), grad);
            // PEFT's update_layer sets ranknum = rank, then copies the old value back when rank > 0.
            rn = new Parameter(rank > 0 ? ranknum[adapter].detach().clone() : zeros([1], ScalarType.Float32, device), requires_grad: false);
        }
        settings[adapter] = s with { Rank = rank };
        Replace(adapter, a, b, e, rn);
    }

    /// <summary>Removes an adapter's parameters; does nothing if the layer lacks it.</summary>
    /// <exception cref="PeftSharpException">The adapter is merged.</exception>
    public void DeleteAdapter(string name)
    {
        if (merged.Contains(name)) throw new PeftSharpException($"adapter \"{name}\" is merged; unmerge it before deleting it");
        if (!settings.Remove(name)) return;
        Replace(name, null, null, null, null);
        ActiveAdapters = ActiveAdapters.Where(a => a != name).ToArray();
    }

    /// <summary>The adapter's output for an input already in the adapter's dtype (no dropout applied here).</summary>
    Tensor Delta(string adapter, Tensor x)
    {
        var ae = loraA[adapter].mul(loraE[adapter]);
        var h = nn.functional.linear(nn.functional.linear(x, ae), loraB[adapter]);
        return h.mul(settings[adapter].Scaling).div(ranknum[adapter].add(RanknumEpsilon));
    }

    /// <summary>
    /// Base output plus, for each active unmerged adapter, dropout(x) · (A ⊙ E)ᵀ · Bᵀ · scaling / (ranknum + 1e-5), as PEFT's SVDLinear.
    /// </summary>
    public Tensor Forward(Tensor x)
    {
        if (Disabled)
        {
            if (Merged) Unmerge();
            return Host.BaseForward(x);
        }
        if (Merged) return Host.BaseForward(x);
        using var scope = NewDisposeScope();
        var result = Host.BaseForward(x);
        foreach (var name in ActiveAdapters)
        {
            if (!settings.TryGetValue(name, out var s)) continue;
            var xa = x.to_type(loraA[name].dtype);
            if (s.Dropout > 0 && Host.training) xa = nn.functional.dropout(xa, s.Dropout, training: true);
            result = result.add(Delta(name, xa).to_type(result.dtype));
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>ΔW = B·(A ⊙ E)·scaling / (ranknum + 1e-5) as float32 [out, in] (PEFT's get_delta_weight, untransposed).</summary>
    public Tensor DeltaWeight(string adapter)
    {
        using var scope = NewDisposeScope();
        var a = loraA[adapter].detach().to_type(ScalarType.Float32);
        var e = loraE[adapter].detach().to_type(ScalarType.Float32);
        var b = loraB[adapter].detach().to_type(ScalarType.Float32);
        var delta = b.matmul(a.mul(e)).mul(settings[adapter].Scaling).div(ranknum[adapter].detach().add(RanknumEpsilon));
        return delta.MoveToOuterDisposeScope();
    }

    /// <summary>Folds adapters into the base weight (W += ΔW); with <paramref name="safe"/>, refuses NaN or ±∞ results.</summary>
    public void Merge(IEnumerable<string>? adapters = null, bool safe = false)
    {
        using var _ = no_grad();
        foreach (var name in (adapters ?? ActiveAdapters).ToList())
        {
            if (!settings.ContainsKey(name) || merged.Contains(name)) continue;
            using var scope = NewDisposeScope();
            var updated = Host.WeightOutIn.to_type(ScalarType.Float32).add(DeltaWeight(name));
            if (safe && !updated.isfinite().all().item<bool>())
                throw new PeftSharpException($"merging adapter \"{name}\" would put NaN or infinite values into the base weight; not merged");
            SetBaseWeight(updated);
            merged.Add(name);
        }
    }

    /// <summary>Undoes <see cref="Merge"/>, most recent adapter first.</summary>
    public void Unmerge()
    {
        using var _ = no_grad();
        while (merged.Count > 0)
        {
            using var scope = NewDisposeScope();
            SetBaseWeight(Host.WeightOutIn.to_type(ScalarType.Float32).sub(DeltaWeight(merged[^1])));
            merged.RemoveAt(merged.Count - 1);
        }
    }

    void SetBaseWeight(Tensor outIn) => Host.weight.copy_(Host.FanInFanOut ? outIn.t() : outIn);

    /// <summary>Detaches from the host: the layer computes its base output again and the AdaLoRA parameters are gone.</summary>
    internal void Detach()
    {
        Host.RemoveTuner(this);
        foreach (var n in new[] { "lora_A", "lora_B", "lora_E", "ranknum" }) Host.RemoveSubmodule(n);
    }
}
