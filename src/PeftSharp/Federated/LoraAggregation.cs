using static TorchSharp.torch;

namespace PeftSharp.Federated;

/// <summary>How the server combines the clients' adapters.</summary>
public enum AggregationKind
{
    /// <summary>FedIT: A and B averaged separately, weighted by samples. mean(B)·mean(A) ≠ mean(B·A): inexact.</summary>
    FedAvg,
    /// <summary>FFA-LoRA (Sun et al. 2024): A frozen at its shared initialisation, only B trained and averaged: exact.</summary>
    FfaLora,
    /// <summary>The weighted mean of the clients' ΔW = s·B·A, exact, then refactored to rank r by truncated SVD.</summary>
    Svd,
}

/// <summary>The three aggregations of client LoRA factors, and FedAvg's inexactness.</summary>
public static class LoraAggregation
{
    /// <summary>Parses a CLI name: <c>fedavg</c>, <c>ffa-lora</c> (or <c>ffa</c>) or <c>svd</c>, any case.</summary>
    /// <exception cref="PeftSharpException">Any other name.</exception>
    public static AggregationKind Parse(string name) => name.ToLowerInvariant() switch
    {
        "fedavg" => AggregationKind.FedAvg,
        "ffa-lora" or "ffa" => AggregationKind.FfaLora,
        "svd" => AggregationKind.Svd,
        _ => throw new PeftSharpException($"--aggregation: expected fedavg, ffa-lora or svd, got \"{name}\""),
    };

    /// <summary>Client weights n_k / Σ n.</summary>
    public static double[] Weights(IReadOnlyList<ClientUpdate> updates)
    {
        if (updates.Count == 0) throw new ArgumentException("no client updates to aggregate", nameof(updates));
        double total = updates.Sum(u => (double)u.Samples);
        if (!(total > 0)) throw new ArgumentException("client updates carry no samples", nameof(updates));
        return updates.Select(u => u.Samples / total).ToArray();
    }

    /// <summary>
    /// The aggregate adapter. <paramref name="scaling"/> (α/r) and <paramref name="rank"/> are used by SVD only;
    /// FFA-LoRA checks that every client kept the same A.
    /// </summary>
    public static LoraFactors Aggregate(AggregationKind kind, IReadOnlyList<ClientUpdate> updates, double scaling, int rank) => kind switch
    {
        AggregationKind.FedAvg => FedAvg(updates),
        AggregationKind.FfaLora => FfaLora(updates),
        AggregationKind.Svd => Svd(updates, scaling, rank),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>A = Σ w_k A_k, B = Σ w_k B_k.</summary>
    public static LoraFactors FedAvg(IReadOnlyList<ClientUpdate> updates)
    {
        var w = Weights(updates);
        using var _ = no_grad();
        return new LoraFactors(updates[0].Factors.Layers.Keys.ToDictionary(path => path,
            path => (LoraFactors.Keep(WeightedSum(updates, w, u => u.Factors.Layers[path].A)),
                     LoraFactors.Keep(WeightedSum(updates, w, u => u.Factors.Layers[path].B))), StringComparer.Ordinal));
    }

    /// <summary>A from the clients (identical: frozen), B = Σ w_k B_k.</summary>
    public static LoraFactors FfaLora(IReadOnlyList<ClientUpdate> updates)
    {
        var w = Weights(updates);
        using var _ = no_grad();
        var layers = new Dictionary<string, (Tensor, Tensor)>(StringComparer.Ordinal);
        foreach (var path in updates[0].Factors.Layers.Keys)
        {
            var a = updates[0].Factors.Layers[path].A;
            foreach (var u in updates.Skip(1))
                if (!u.Factors.Layers[path].A.allclose(a, rtol: 0, atol: 0))
                    throw new PeftSharpException($"FFA-LoRA: client {u.Client} changed lora_A of {path}; A must stay frozen at the shared initialisation");
            layers[path] = (LoraFactors.Keep(a.clone()), LoraFactors.Keep(WeightedSum(updates, w, u => u.Factors.Layers[path].B)));
        }
        return new LoraFactors(layers);
    }

    /// <summary>
    /// ΔW = Σ w_k s·B_k·A_k exactly, then its best rank-r approximation U_r S_r V_rᵀ (Eckart–Young) split as
    /// B = U_r √S_r / √s, A = √S_r V_rᵀ / √s, so that s·B·A is that approximation.
    /// </summary>
    public static LoraFactors Svd(IReadOnlyList<ClientUpdate> updates, double scaling, int rank)
    {
        var w = Weights(updates);
        using var _ = no_grad();
        var layers = new Dictionary<string, (Tensor, Tensor)>(StringComparer.Ordinal);
        foreach (var path in updates[0].Factors.Layers.Keys)
        {
            using var scope = NewDisposeScope();
            var delta = WeightedSum(updates, w, u => u.Factors.Layers[path].B.matmul(u.Factors.Layers[path].A).mul(scaling));
            var (uMat, s, vh) = linalg.svd(delta, fullMatrices: false);
            int k = (int)Math.Min(rank, s.shape[0]);
            var root = s.narrow(0, 0, k).div(scaling).sqrt();
            var b = uMat.narrow(1, 0, k).mul(root.unsqueeze(0));
            var a = root.unsqueeze(1).mul(vh.narrow(0, 0, k));
            if (k < rank) // fewer singular values than r (tiny layers): pad with zero components
            {
                b = cat([b, zeros(b.shape[0], rank - k)], 1);
                a = cat([a, zeros(rank - k, a.shape[1])], 0);
            }
            layers[path] = (LoraFactors.Keep(a.contiguous().MoveToOuterDisposeScope()), LoraFactors.Keep(b.contiguous().MoveToOuterDisposeScope()));
        }
        return new LoraFactors(layers);
    }

    /// <summary>
    /// FedAvg's error on the update: ‖mean(B)·mean(A) − mean(B·A)‖_F / ‖mean(B·A)‖_F over all layers together
    /// (weighted means; 0 when every client has the same A or the same B).
    /// </summary>
    public static double FedAvgInexactness(IReadOnlyList<ClientUpdate> updates)
    {
        var w = Weights(updates);
        using var _ = no_grad();
        double err = 0, norm = 0;
        foreach (var path in updates[0].Factors.Layers.Keys)
        {
            using var scope = NewDisposeScope();
            var exact = WeightedSum(updates, w, u => u.Factors.Layers[path].B.matmul(u.Factors.Layers[path].A));
            var approx = WeightedSum(updates, w, u => u.Factors.Layers[path].B).matmul(WeightedSum(updates, w, u => u.Factors.Layers[path].A));
            err += approx.sub(exact).pow(2).sum().item<float>();
            norm += exact.pow(2).sum().item<float>();
        }
        return norm > 0 ? Math.Sqrt(err / norm) : 0;
    }

    static Tensor WeightedSum(IReadOnlyList<ClientUpdate> updates, double[] w, Func<ClientUpdate, Tensor> pick)
    {
        var sum = pick(updates[0]).mul(w[0]);
        for (int k = 1; k < updates.Count; k++) sum = sum.add(pick(updates[k]).mul(w[k]));
        return sum;
    }
}
