using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// PEFT's <c>add_weighted_adapter</c>: a new adapter made from existing ones. The new adapter has
/// lora_alpha = r (scaling 1), so each source adapter's scaling is folded into the new factors:
/// <list type="bullet">
/// <item><c>linear</c> (same rank required): A = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ.</item>
/// <item><c>cat</c>: A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ B₂ …], rank Σrᵢ — exactly Σ wᵢ·ΔWᵢ.</item>
/// <item><c>svd</c>: the top-k singular factors of Σ (wᵢsᵢ)·ΔWᵢ, with ΔWᵢ = sᵢBᵢAᵢ (PEFT applies the scaling
/// twice here; we match it), rank k = svd_rank or the largest source rank.</item>
/// </list>
/// </summary>
public static class WeightedAdapters
{
    public static void AddWeightedAdapter(this LoraModel lora, IReadOnlyList<string> adapters, IReadOnlyList<double> weights,
                                          string newName, string combinationType = "svd", int? svdRank = null)
    {
        if (adapters.Count == 0 || adapters.Count != weights.Count)
            throw new PeftSharpException("add_weighted_adapter: give one weight per adapter");
        foreach (var a in adapters)
            if (!lora.Configs.ContainsKey(a)) throw new PeftSharpException($"add_weighted_adapter: no adapter named \"{a}\"");
        var ranks = adapters.Select(a => lora.Configs[a].R).ToList();
        int newRank = combinationType switch
        {
            "linear" when ranks.Distinct().Count() > 1 =>
                throw new PeftSharpException("add_weighted_adapter: combination_type \"linear\" needs adapters of the same r; use \"cat\" or \"svd\""),
            "linear" => ranks[0],
            "cat" => ranks.Sum(),
            "svd" => svdRank ?? ranks.Max(),
            _ => throw new PeftSharpException($"add_weighted_adapter: combination_type \"{combinationType}\" is not supported (expected linear, cat or svd)"),
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
        foreach (var layer in lora.LinearLayers.Values.Where(l => l.Adapters.ContainsKey(newName)))
        {
            var (a, b) = Combine(combinationType, adapters, weights, newRank, layer.Adapters,
                n => layer.A(n).weight, n => layer.B(n).weight, n => layer.DeltaWeight(n));
            layer.A(newName).weight.copy_(a);
            layer.B(newName).weight.copy_(b);
        }
        foreach (var layer in lora.EmbeddingLayers.Values.Where(l => l.Adapters.ContainsKey(newName)))
        {
            var (a, b) = Combine(combinationType, adapters, weights, newRank, layer.Adapters,
                n => layer.A(n), n => layer.B(n), n => layer.DeltaWeight(n).t());
            layer.A(newName).copy_(a);
            layer.B(newName).copy_(b);
        }
    }

    static TargetModules UnionTargets(IEnumerable<LoraConfig> configs)
    {
        var list = configs.Select(c => c.TargetModules!).ToList();
        if (list.All(t => t.Names is not null)) return TargetModules.FromNames(list.SelectMany(t => t.Names!).Distinct());
        return TargetModules.FromRegex(string.Join("|", list.Select(t => $"({t.Regex ?? string.Join("|", t.Names!.Select(System.Text.RegularExpressions.Regex.Escape))})")));
    }

    /// <summary>New (A, B) for one layer; deltaOf gives sᵢ·Bᵢ·Aᵢ in the B·A orientation.</summary>
    static (Tensor A, Tensor B) Combine(string type, IReadOnlyList<string> adapters, IReadOnlyList<double> weights, int newRank,
        IReadOnlyDictionary<string, LoraAdapterSettings> present, Func<string, Tensor> aOf, Func<string, Tensor> bOf, Func<string, Tensor> deltaOf)
    {
        var used = adapters.Select((name, i) => (name, w: weights[i])).Where(p => present.ContainsKey(p.name)).ToList();
        if (used.Count == 0) throw new PeftSharpException("add_weighted_adapter: no source adapter covers this layer");
        using var scope = NewDisposeScope();
        Tensor a, b;
        switch (type)
        {
            case "linear":
                a = zeros_like(aOf(used[0].name), ScalarType.Float32);
                b = zeros_like(bOf(used[0].name), ScalarType.Float32);
                foreach (var (name, w) in used)
                {
                    double ws = w * present[name].Scaling;
                    a = a.add(aOf(name).to_type(ScalarType.Float32).mul((ws >= 0 ? 1 : -1) * Math.Sqrt(Math.Abs(ws))));
                    b = b.add(bOf(name).to_type(ScalarType.Float32).mul(Math.Sqrt(Math.Abs(ws))));
                }
                break;
            case "cat":
                a = cat(used.Select(p => aOf(p.name).to_type(ScalarType.Float32).mul(p.w * present[p.name].Scaling)).ToArray(), 0);
                b = cat(used.Select(p => bOf(p.name).to_type(ScalarType.Float32)).ToArray(), 1);
                break;
            default: // svd
                var delta = used.Select(p => deltaOf(p.name).mul(p.w * present[p.name].Scaling)).Aggregate((x, y) => x.add(y));
                var (u, s, vh) = linalg.svd(delta, fullMatrices: false);
                int k = (int)Math.Min(newRank, s.shape[0]);
                b = u.narrow(1, 0, k).mul(s.narrow(0, 0, k).unsqueeze(0));
                a = vh.narrow(0, 0, k);
                if (k < newRank)
                {
                    a = cat([a, zeros(newRank - k, a.shape[1])], 0);
                    b = cat([b, zeros(b.shape[0], newRank - k)], 1);
                }
                break;
        }
        return (a.MoveToOuterDisposeScope(), b.MoveToOuterDisposeScope());
    }
}
