namespace PeftSharp.Tuners.Noah;

/// <summary>Settings of NOAH's evolutionary search.</summary>
public sealed record SearchOptions
{
    /// <summary>Sub-networks per generation. Default 10.</summary>
    public int Population { get; init; } = 10;
    /// <summary>Generations after the random first one. Default 5.</summary>
    public int Generations { get; init; } = 5;
    /// <summary>Probability that a mutation child redraws each size. Default 0.3.</summary>
    public double MutationProbability { get; init; } = 0.3;
    /// <summary>Seed of every random choice.</summary>
    public int Seed { get; init; }
}

/// <summary>The outcome of a search.</summary>
/// <param name="Best">The sub-network of lowest fitness within the budget.</param>
/// <param name="Fitness">Its fitness (validation loss).</param>
/// <param name="Parameters">Its trainable parameters.</param>
/// <param name="History">The best fitness after each generation (0 = the random first population).</param>
/// <param name="Evaluations">Distinct sub-networks evaluated.</param>
public sealed record SearchResult(SubNet Best, double Fitness, long Parameters, IReadOnlyList<double> History, int Evaluations);

/// <summary>
/// NOAH's search (as AutoFormer's, which NOAH uses): a random first population of sub-networks within the parameter
/// budget; each generation keeps the better half as parents and refills the population with mutation children (each
/// size redrawn from its list with the mutation probability) and crossover children (each size from one of two
/// parents), rejecting children over the budget. Fitness (lower is better: the validation loss) is computed once per
/// sub-network. Everything random comes from the seed.
/// </summary>
public static class EvolutionarySearch
{
    /// <summary>Searches the sizes in <paramref name="choices"/> for the lowest <paramref name="fitness"/> with <paramref name="cost"/> ≤ <paramref name="budget"/>.</summary>
    /// <exception cref="PeftSharpException">No sub-network fits the budget.</exception>
    public static SearchResult Run(NoahConfig choices, Func<SubNet, long> cost, long budget, Func<SubNet, double> fitness, SearchOptions options,
                                   Action<int, SubNet, double>? progress = null)
    {
        if (options.Population < 2) throw new PeftSharpException($"population {options.Population}: need at least 2");
        if (options.Generations < 0) throw new PeftSharpException($"generations {options.Generations}: need 0 or more");
        var feasible = (from r in choices.LoraRanks from d in choices.AdapterDims from p in choices.PromptLengths
                        let s = new SubNet(r, d, p) where cost(s) <= budget select s).ToList();
        if (feasible.Count == 0)
        {
            long smallest = new SubNet(choices.LoraRanks.Min(), choices.AdapterDims.Min(), choices.PromptLengths.Min()) is var m ? cost(m) : 0;
            throw new PeftSharpException($"budget {budget}: no sub-network fits (the smallest has {smallest} trainable parameters)");
        }
        var random = new Random(options.Seed);
        var cache = new Dictionary<SubNet, double>();
        double Fit(SubNet s)
        {
            if (!cache.TryGetValue(s, out double f))
            {
                cache[s] = f = fitness(s);
                progress?.Invoke(cache.Count, s, f);
            }
            return f;
        }
        int size = Math.Min(options.Population, feasible.Count);
        var population = feasible.OrderBy(_ => random.Next()).Take(size).ToList();
        var history = new List<double>();
        for (int generation = 0; ; generation++)
        {
            var ranked = population.OrderBy(Fit).ThenBy(s => s.ToString(), StringComparer.Ordinal).ToList();
            history.Add(cache.Values.Min());
            if (generation == options.Generations) break;
            var parents = ranked.Take(Math.Max(2, size / 2)).ToList();
            var next = new List<SubNet>(parents);
            for (int tries = 0; next.Count < size && tries < 100 * size; tries++)
            {
                SubNet child = (tries % 2 == 0) ? Mutate(parents[random.Next(parents.Count)], choices, options.MutationProbability, random)
                                                : Cross(parents[random.Next(parents.Count)], parents[random.Next(parents.Count)], random);
                if (cost(child) <= budget && !next.Contains(child)) next.Add(child);
            }
            population = next;
        }
        var best = cache.Where(kv => cost(kv.Key) <= budget).OrderBy(kv => kv.Value).ThenBy(kv => kv.Key.ToString(), StringComparer.Ordinal).First();
        return new SearchResult(best.Key, best.Value, cost(best.Key), history, cache.Count);
    }

    static SubNet Mutate(SubNet s, NoahConfig c, double p, Random random) => new(
        random.NextDouble() < p ? c.LoraRanks[random.Next(c.LoraRanks.Count)] : s.Rank,
        random.NextDouble() < p ? c.AdapterDims[random.Next(c.AdapterDims.Count)] : s.AdapterDim,
        random.NextDouble() < p ? c.PromptLengths[random.Next(c.PromptLengths.Count)] : s.PromptLength);

    static SubNet Cross(SubNet a, SubNet b, Random random) => new(
        random.Next(2) == 0 ? a.Rank : b.Rank,
        random.Next(2) == 0 ? a.AdapterDim : b.AdapterDim,
        random.Next(2) == 0 ? a.PromptLength : b.PromptLength);
}
