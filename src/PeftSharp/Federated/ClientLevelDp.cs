using static TorchSharp.torch;

namespace PeftSharp.Federated;

/// <summary>
/// Client-level differential privacy (DP-FedAvg, McMahan et al. 2018): each client's update Δ_k = local − global
/// (all factors that travel, as one vector) is clipped to L2 norm C, the server averages the clipped updates with
/// equal weights and adds Gaussian noise of standard deviation σ·C/K. One round is one step of the subsampled Gaussian
/// mechanism with q = K / clients, so <see cref="Privacy.RdpAccountant"/> gives ε over rounds.
/// </summary>
public sealed record ClientLevelDp(double ClipNorm, double NoiseMultiplier)
{
    /// <summary>The noisy mean of the clipped updates added to <paramref name="global"/>; B only when <paramref name="onlyB"/>.</summary>
    public LoraFactors Aggregate(LoraFactors global, IReadOnlyList<ClientUpdate> updates, bool onlyB, Generator? generator = null)
    {
        if (!(ClipNorm > 0)) throw new PeftSharpException($"--dp-clip: expected a positive number, got {ClipNorm}");
        if (!(NoiseMultiplier >= 0)) throw new PeftSharpException($"--dp-noise-multiplier: expected 0 or more, got {NoiseMultiplier}");
        using var _ = no_grad();
        var factors = new List<double>();
        foreach (var u in updates)
        {
            double sq = 0;
            foreach (var (path, (a, b)) in u.Factors.Layers)
            {
                var (ga, gb) = global.Layers[path];
                sq += b.sub(gb).pow(2).sum().item<float>();
                if (!onlyB) sq += a.sub(ga).pow(2).sum().item<float>();
            }
            factors.Add(Math.Min(1, ClipNorm / (Math.Sqrt(sq) + 1e-12)));
        }
        double std = NoiseMultiplier * ClipNorm / updates.Count;
        var layers = new Dictionary<string, (Tensor, Tensor)>(StringComparer.Ordinal);
        foreach (var (path, (ga, gb)) in global.Layers)
        {
            Tensor Mean(Tensor g, Func<ClientUpdate, Tensor> pick)
            {
                var sum = zeros_like(g);
                for (int k = 0; k < updates.Count; k++) sum.add_(pick(updates[k]).sub(g).mul(factors[k]));
                return g.add(sum.div(updates.Count)).add(randn(g.shape, generator: generator).mul(std));
            }
            var b = Mean(gb, u => u.Factors.Layers[path].B);
            var a = onlyB ? ga.clone() : Mean(ga, u => u.Factors.Layers[path].A);
            layers[path] = (LoraFactors.Keep(a), LoraFactors.Keep(b));
        }
        return new LoraFactors(layers);
    }
}
