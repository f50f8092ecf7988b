using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Composition;

/// <summary>
/// LoraHub (Huang et al. 2023): N LoRA modules trained on other tasks composed for a new task from a few examples,
/// without gradients. The composition is element-wise on both factors, A = Σ wᵢAᵢ and B = Σ wᵢBᵢ (so all modules
/// need the same r and scaling), and the weights minimise loss(w) + α·mean|wᵢ| (the paper's L1 term, α = 0.05),
/// searched by <see cref="Cmaes"/> from w = 0 inside [−1.5, 1.5] with a budget of evaluations (the paper's
/// Nevergrad search uses 40).
/// </summary>
public static class LoraHub
{
    /// <summary>The searched weights, the loss and objective at them, and the objective of every evaluation.</summary>
    public sealed record Result(double[] Weights, double Loss, double Objective, int Evaluations, IReadOnlyList<double> History);

    /// <summary>Settings of the LoraHub search; the defaults are the paper's.</summary>
    public sealed record Options
    {
        /// <summary>
        /// Objective evaluations the gradient-free search may spend (LoraHub's <c>max_inference_step</c>, default 40).
        /// </summary>
        public int Budget { get; init; } = 40;
        /// <summary>Weight of the L1 penalty on the composition weights added to the loss (default 0.05).</summary>
        public double L1 { get; init; } = 0.05;
        /// <summary>Each composition weight is clipped to [−Bound, Bound] (default 1.5).</summary>
        public double Bound { get; init; } = 1.5;
        /// <summary>Initial CMA-ES step (the search starts at w = 0).</summary>
        public double Sigma { get; init; } = 0.5;
        /// <summary>Seed of the CMA-ES search, so runs repeat.</summary>
        public long Seed { get; init; } = 0;
    }

    /// <summary>
    /// Adds <paramref name="target"/> (inactive, not trainable) shaped like <paramref name="modules"/>[0]; checks that
    /// every module has the same r, scaling and layers, as LoraHub's element-wise composition needs.
    /// </summary>
    public static void AddComposed(LoraModel lora, IReadOnlyList<string> modules, string target)
    {
        if (modules.Count == 0) throw new PeftSharpException("LoraHub: give at least one LoRA module");
        var first = lora.Configs[modules[0]];
        foreach (var m in modules.Skip(1))
        {
            var c = lora.Configs[m];
            if (c.R != first.R || c.LoraAlpha != first.LoraAlpha || c.UseRslora != first.UseRslora || c.RankPattern is { Count: > 0 } || c.AlphaPattern is { Count: > 0 })
                throw new PeftSharpException($"LoraHub: module \"{m}\" has r={c.R}, lora_alpha={c.LoraAlpha}; every module must share \"{modules[0]}\"'s r={first.R} and lora_alpha={first.LoraAlpha} (no rank/alpha patterns)");
            if (c.UseDora) throw new PeftSharpException($"LoraHub: module \"{m}\" is a DoRA adapter; only plain LoRA modules compose");
        }
        var layersOf = (string name) => lora.LinearLayers.Where(l => l.Value.Adapters.ContainsKey(name)).Select(l => l.Key).Order().ToList();
        var layers = layersOf(modules[0]);
        foreach (var m in modules.Skip(1))
            if (!layersOf(m).SequenceEqual(layers)) throw new PeftSharpException($"LoraHub: module \"{m}\" adapts other layers than \"{modules[0]}\"; every module must target the same layers");
        if (lora.EmbeddingLayers.Values.Any(l => modules.Any(l.Adapters.ContainsKey)))
            throw new PeftSharpException("LoraHub: modules on embedding layers are not supported");
        var config = LoraConfig.FromJson(first.ToJson());
        config.TargetModules = TargetModules.FromNames(layers);
        lora.AddAdapter(target, config, trainable: false);
    }

    /// <summary>Writes A = Σ wᵢAᵢ, B = Σ wᵢBᵢ into <paramref name="target"/> in every layer.</summary>
    public static void Compose(LoraModel lora, IReadOnlyList<string> modules, IReadOnlyList<double> weights, string target)
    {
        if (weights.Count != modules.Count) throw new PeftSharpException($"LoraHub: {weights.Count} weight(s) for {modules.Count} module(s)");
        using var _ = no_grad();
        foreach (var layer in lora.LinearLayers.Values.Where(l => l.Adapters.ContainsKey(target)))
        {
            using var scope = NewDisposeScope();
            var a = layer.A(target).weight;
            var b = layer.B(target).weight;
            a.zero_();
            b.zero_();
            for (int i = 0; i < modules.Count; i++)
            {
                a.add_(layer.A(modules[i]).weight, alpha: weights[i]);
                b.add_(layer.B(modules[i]).weight, alpha: weights[i]);
            }
        }
    }

    /// <summary>
    /// Searches the weights: each evaluation composes <paramref name="target"/> (made by <see cref="AddComposed"/>),
    /// makes it the only active adapter and calls <paramref name="loss"/>. Leaves <paramref name="target"/> composed with
    /// the best weights found.
    /// </summary>
    public static Result Search(LoraModel lora, IReadOnlyList<string> modules, string target, Func<double> loss, Options? options = null,
                                Action<int, double, double>? onEvaluation = null)
    {
        options ??= new Options();
        if (options.L1 < 0) throw new PeftSharpException($"LoraHub: the L1 coefficient must be ≥ 0, got {options.L1}");
        var previous = lora.ActiveAdapters.ToArray();
        lora.SetAdapter(target);
        try
        {
            double Objective(double[] w)
            {
                Compose(lora, modules, w, target);
                return loss() + options.L1 * w.Average(Math.Abs);
            }
            var start = new double[modules.Count];
            var found = Cmaes.Minimize(Objective, start, options.Sigma, options.Budget, -options.Bound, options.Bound, options.Seed, onEvaluation);
            Compose(lora, modules, found.Best, target);
            double bestLoss = loss();
            return new Result(found.Best, bestLoss, found.BestValue, found.Evaluations, found.Values);
        }
        finally
        {
            if (previous.Length > 0) lora.SetAdapter(previous);
        }
    }
}
