using PeftSharp.Composition;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// PEFT's <c>add_weighted_adapter</c>: a new adapter made from existing ones. The new adapter has
/// lora_alpha = r (scaling 1), so each source adapter's scaling is folded into the new factors:
/// <list type="bullet">
/// <item><c>linear</c>, <c>ties</c>, <c>dare_linear</c>, <c>dare_ties</c>, <c>magnitude_prune</c> (same rank
/// required): the A factors and the B factors are each merged by that method (<see cref="TaskMerging"/>) with weights
/// sign(wᵢsᵢ)·√|wᵢsᵢ| for A and √|wᵢsᵢ| for B — for <c>linear</c>, A = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ.</item>
/// <item><c>cat</c>: A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ B₂ …], rank Σrᵢ — exactly Σ wᵢ·ΔWᵢ.</item>
/// <item><c>svd</c>, <c>ties_svd</c>, <c>dare_linear_svd</c>, <c>dare_ties_svd</c>, <c>magnitude_prune_svd</c>: the
/// deltas ΔWᵢ = sᵢBᵢAᵢ are merged by that method with weights wᵢsᵢ (PEFT applies the scaling twice here; we match
/// it), then the top-k singular factors are kept, rank k = svd_rank or the largest source rank, optionally clamped
/// at a quantile (svd_clamp).</item>
/// </list>
/// A single source adapter is always combined linearly, as PEFT does.
/// </summary>
public static class WeightedAdapters
{
    /// <summary>Every combination_type of PEFT's add_weighted_adapter.</summary>
    public static IReadOnlyList<string> CombinationTypes { get; } =
        ["svd", "linear", "cat", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd", "dare_linear_svd", "magnitude_prune", "magnitude_prune_svd"];

    /// <summary>
    /// Adds <paramref name="newName"/>, combined from <paramref name="adapters"/> with <paramref name="weights"/>
    /// (negative weights subtract). <paramref name="density"/> is the kept fraction for the pruning types,
    /// <paramref name="majoritySign"/> TIES' sign election, <paramref name="seed"/> fixes DARE's random masks.
    /// </summary>
    public static void AddWeightedAdapter(this LoraModel lora, IReadOnlyList<string> adapters, IReadOnlyList<double> weights,
                                          string newName, string combinationType = "svd", int? svdRank = null,
                                          double? density = null, MajoritySign majoritySign = MajoritySign.Total,
                                          double? svdClamp = null, long? seed = null)
    {
        if (adapters.Count == 0 || adapters.Count != weights.Count)
            throw new PeftSharpException($"add_weighted_adapter: give one weight per adapter ({adapters.Count} adapters, {weights.Count} weights)");
        foreach (var a in adapters)
            if (!lora.Configs.ContainsKey(a)) throw new PeftSharpException($"add_weighted_adapter: no adapter named \"{a}\"");
        if (!CombinationTypes.Contains(combinationType))
            throw new PeftSharpException($"add_weighted_adapter: combination_type \"{combinationType}\" is not supported (expected {string.Join(", ", CombinationTypes)})");
        if (adapters.Count == 1) combinationType = "linear";
        string method = MethodOf(combinationType);
        if (TaskMerging.UsesDensity(method) && density is not (> 0 and <= 1))
            throw new PeftSharpException($"add_weighted_adapter: combination_type \"{combinationType}\" needs a density in (0, 1]{(density is null ? "" : $", got {density}")}");
        if (svdClamp is not null && combinationType.EndsWith("svd", StringComparison.Ordinal) && svdClamp is not (> 0 and <= 1))
            throw new PeftSharpException($"add_weighted_adapter: svd_clamp must be a quantile in (0, 1], got {svdClamp}");
        // The rank a layer can have: r, or the largest rank_pattern entry.
        var ranks = adapters.Select(a => lora.Configs[a] is var c && c.RankPattern is { Count: > 0 } p ? Math.Max(c.R, p.Values.Max()) : lora.Configs[a].R).ToList();
        int newRank = combinationType switch
        {
            "cat" => ranks.Sum(),
            _ when combinationType.EndsWith("svd", StringComparison.Ordinal) => svdRank ?? ranks.Max(),
            _ when ranks.Distinct().Count() > 1 => throw new PeftSharpException(
                $"add_weighted_adapter: combination_type \"{combinationType}\" needs adapters of the same r (got {string.Join(", ", adapters.Select((a, i) => $"{a}: {ranks[i]}"))}); use \"cat\" or an _svd type"),
            _ => ranks[0],
        };
        if (lora.Configs.Values.Any(c => c.UseDora) && adapters.Any(a => lora.Configs[a].UseDora))
            throw new PeftSharpException("add_weighted_adapter: DoRA adapters cannot be combined");
        var first = lora.Configs[adapters[0]];
        var config = LoraConfig.FromJson(first.ToJson());
        config.R = newRank;
        config.LoraAlpha = newRank;
        config.RankPattern = new(StringComparer.Ordinal);
        config.AlphaPattern = new(StringComparer.Ordinal);
        config.InitLoraWeights = InitLoraWeights.True;
        config.TargetModules = UnionTargets(adapters.Select(a => lora.Configs[a]));
        lora.AddAdapter(newName, config, trainable: false);

        using var _ = no_grad();
        using var generator = seed is null ? null : new Generator((ulong)seed.Value);
        var how = new Combination(combinationType, method, newRank, density, majoritySign, svdClamp, generator);
        foreach (var layer in lora.LinearLayers.Values.Where(l => l.Adapters.ContainsKey(newName)))
        {
            var (a, b) = Combine(how, adapters, weights, layer.Adapters,
                n => layer.A(n).weight, n => layer.B(n).weight, n => layer.DeltaWeight(n));
            layer.A(newName).weight.copy_(a);
            layer.B(newName).weight.copy_(b);
        }
        foreach (var layer in lora.EmbeddingLayers.Values.Where(l => l.Adapters.ContainsKey(newName)))
        {
            var (a, b) = Combine(how, adapters, weights, layer.Adapters,
                n => layer.A(n), n => layer.B(n), n => layer.DeltaWeight(n).t());
            layer.A(newName).copy_(a);
            layer.B(newName).copy_(b);
        }
    }

    /// <summary>The merge method behind a combination type: "svd" is task arithmetic ("linear") before the SVD.</summary>
    static string MethodOf(string combinationType) => combinationType switch
    {
        "svd" or "cat" => "linear",
        _ => combinationType.EndsWith("_svd", StringComparison.Ordinal) ? combinationType[..^4] : combinationType,
    };

    sealed record Combination(string Type, string Method, int NewRank, double? Density, MajoritySign Sign, double? SvdClamp, Generator? Generator);

    static TargetModules UnionTargets(IEnumerable<LoraConfig> configs)
    {
        var list = configs.Select(c => c.TargetModules!).ToList();
        if (list.All(t => t.Names is not null)) return TargetModules.FromNames(list.SelectMany(t => t.Names!).Distinct());
        return TargetModules.FromRegex(string.Join("|", list.Select(t => $"({t.Regex ?? string.Join("|", t.Names!.Select(System.Text.RegularExpressions.Regex.Escape))})")));
    }

    /// <summary>
    /// The thin SVD of Σ Bᵢ·Aᵢ (Bᵢ [out, rᵢ], Aᵢ [rᵢ, in]) without forming the [out, in] matrix: with B = [B₁ … Bₙ] = Q_B·R_B
    /// and Aᵀ = [A₁; …; Aₙ]ᵀ = Q_A·R_A, Σ Bᵢ·Aᵢ = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ, so the SVD of the small R×R core (R = Σ rᵢ) gives it
    /// exactly. The same singular values and vectors (up to sign) as a full SVD of the sum, in O((out + in)·R²) instead of
    /// O(out·in·min(out, in)): what makes <c>combine --combination-type svd</c> fast at 7B widths.
    /// </summary>
    static (Tensor U, Tensor S, Tensor Vh) LowRankSvd(IReadOnlyList<Tensor> bs, IReadOnlyList<Tensor> as_)
    {
        var (qb, rb) = linalg.qr(cat(bs.ToArray(), 1));
        var (qa, ra) = linalg.qr(cat(as_.ToArray(), 0).t());
        var (u, s, vh) = linalg.svd(rb.matmul(ra.t()), fullMatrices: false);
        return (qb.matmul(u), s, vh.matmul(qa.t()));
    }

    /// <summary>New (A, B) for one layer; deltaOf gives sᵢ·Bᵢ·Aᵢ in the B·A orientation.</summary>
    static (Tensor A, Tensor B) Combine(Combination how, IReadOnlyList<string> adapters, IReadOnlyList<double> weights,
        IReadOnlyDictionary<string, LoraAdapterSettings> present, Func<string, Tensor> aOf, Func<string, Tensor> bOf, Func<string, Tensor> deltaOf)
    {
        var used = adapters.Select((name, i) => (name, w: weights[i])).Where(p => present.ContainsKey(p.name)).ToList();
        if (used.Count == 0) throw new PeftSharpException("add_weighted_adapter: no source adapter covers this layer");
        using var scope = NewDisposeScope();
        int newRank = how.NewRank;
        Tensor a, b;
        if (how.Type == "cat")
        {
            a = cat(used.Select(p => aOf(p.name).to_type(ScalarType.Float32).mul(p.w * present[p.name].Scaling)).ToArray(), 0);
            b = cat(used.Select(p => bOf(p.name).to_type(ScalarType.Float32)).ToArray(), 1);
        }
        else if (!how.Type.EndsWith("svd", StringComparison.Ordinal))
        {
            // The sign of wᵢsᵢ goes on the A side only, so that it is applied once.
            var ws = used.Select(p => p.w * present[p.name].Scaling).ToList();
            var wa = ws.Select(x => (x >= 0 ? 1 : -1) * Math.Sqrt(Math.Abs(x))).ToList();
            var wb = ws.Select(x => Math.Sqrt(Math.Abs(x))).ToList();
            a = TaskMerging.Merge(how.Method, used.Select(p => aOf(p.name).to_type(ScalarType.Float32)).ToList(), wa, how.Density, how.Sign, how.Generator);
            b = TaskMerging.Merge(how.Method, used.Select(p => bOf(p.name).to_type(ScalarType.Float32)).ToList(), wb, how.Density, how.Sign, how.Generator);
        }
        else
        {
            Tensor u, s, vh;
            if (how.Method == "linear")
                (u, s, vh) = LowRankSvd(used.Select(p => bOf(p.name).to_type(ScalarType.Float32).mul(p.w * present[p.name].Scaling)).ToList(),
                                        used.Select(p => aOf(p.name).to_type(ScalarType.Float32)).ToList());
            else
            {
                var delta = TaskMerging.Merge(how.Method, used.Select(p => deltaOf(p.name).to_type(ScalarType.Float32)).ToList(),
                    used.Select(p => p.w * present[p.name].Scaling).ToList(), how.Density, how.Sign, how.Generator);
                (u, s, vh) = linalg.svd(delta, fullMatrices: false);
            }
            int k = (int)Math.Min(newRank, s.shape[0]);
            b = u.narrow(1, 0, k).mul(s.narrow(0, 0, k).unsqueeze(0));
            a = vh.narrow(0, 0, k);
            if (how.SvdClamp is double q)
            {
                // PEFT clamps both factors to ± the q-quantile of their entries.
                var hi = quantile(cat([b.flatten(), a.flatten()]), tensor(q, ScalarType.Float32)).item<float>();
                b = b.clamp(-hi, hi);
                a = a.clamp(-hi, hi);
            }
        }
        // Layers that some sources do not cover (cat), or a rank above the delta's (svd), leave zero rows/columns.
        if (a.shape[0] < newRank)
        {
            a = cat([a, zeros(newRank - a.shape[0], a.shape[1])], 0);
            b = cat([b, zeros(b.shape[0], newRank - b.shape[1])], 1);
        }
        return (a.MoveToOuterDisposeScope(), b.MoveToOuterDisposeScope());
    }
}
