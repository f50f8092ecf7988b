namespace PeftSharp.Evaluation;

/// <summary>One scored item, as <c>--output</c> writes it.</summary>
public sealed record ItemResult(
    int Index, string Prompt, string Gold, string Prediction, bool Correct,
    IReadOnlyList<string>? Choices = null, double[]? Loglikelihoods = null, bool? CorrectNorm = null,
    string? Generation = null, double? ExactMatch = null, double? F1 = null);

/// <summary>A task's totals: accuracy, plus acc_norm in loglik mode and exact match / F1 for extractive tasks.</summary>
public sealed record EvalSummary(string Task, string Mode, int N, int Correct, double Accuracy, double? AccNorm, double? ExactMatch, double? F1);

/// <summary>Runs a task's items in loglik or generate mode, or scores given generations, and totals the results.</summary>
public static class Evaluator
{
    /// <summary>Progress after each item or batch: items done, items in all, items right so far.</summary>
    public delegate void Progress(int done, int total, int correct);

    /// <summary>
    /// Loglik mode: each item's choices scored after its context; acc takes the highest summed log-likelihood, acc_norm the
    /// highest log-likelihood divided by the choice's length in characters (lm-evaluation-harness; first index wins ties).
    /// </summary>
    public static List<ItemResult> RunLoglik(EvalTask task, IReadOnlyList<EvalItem> items, Func<string, IReadOnlyList<string>, double[]> score, Progress? progress = null)
    {
        if (!task.HasChoices)
            throw new PeftSharpException($"--mode loglik: task {task.Name} has no answer options to score; use --mode generate");
        var results = new List<ItemResult>(items.Count);
        int correct = 0;
        for (int i = 0; i < items.Count; i++)
        {
            var item = items[i];
            var lls = score(item.Context!, item.Choices.Select(c => item.ChoiceDelimiter + c).ToList());
            int best = ArgMax(lls);
            int bestNorm = ArgMax(lls.Select((ll, k) => ll / Math.Max(1, item.Choices[k].Length)).ToArray());
            bool right = best == item.GoldIndex;
            if (right) correct++;
            results.Add(new ItemResult(i, item.Context!, item.Choices.ElementAtOrDefault(item.GoldIndex) ?? item.Gold, item.Choices[best], right,
                item.Choices, lls, bestNorm == item.GoldIndex));
            progress?.Invoke(i + 1, items.Count, correct);
        }
        return results;
    }

    /// <summary>Generate mode: prompts in batches of <paramref name="batchSize"/> through <paramref name="generate"/>, each answer judged.</summary>
    public static List<ItemResult> RunGenerate(EvalTask task, IReadOnlyList<EvalItem> items, int batchSize, Func<IReadOnlyList<string>, IReadOnlyList<string>> generate, Progress? progress = null)
    {
        if (batchSize < 1) throw new PeftSharpException($"--batch-size: expected at least 1, got {batchSize}");
        var results = new List<ItemResult>(items.Count);
        int correct = 0;
        for (int start = 0; start < items.Count; start += batchSize)
        {
            var batch = items.Skip(start).Take(batchSize).ToList();
            var generations = generate(batch.Select(b => b.Prompt).ToList());
            for (int j = 0; j < batch.Count; j++)
            {
                var r = Judge(task, start + j, batch[j], generations[j]);
                if (r.Correct) correct++;
                results.Add(r);
            }
            progress?.Invoke(results.Count, items.Count, correct);
        }
        return results;
    }

    /// <summary>Scores given generations (one per item, in data order) without a model.</summary>
    public static List<ItemResult> ScoreGenerations(EvalTask task, IReadOnlyList<EvalItem> items, IReadOnlyList<string> generations)
    {
        if (generations.Count != items.Count)
            throw new PeftSharpException($"--predictions: {generations.Count} generations for {items.Count} items (one per item, in data order)");
        return items.Select((item, i) => Judge(task, i, item, generations[i])).ToList();
    }

    static ItemResult Judge(EvalTask task, int index, EvalItem item, string generation)
    {
        var v = GenerationJudge.Judge(task, item, generation);
        return new ItemResult(index, item.Prompt, item.Gold, v.Prediction, v.Correct, Generation: generation, ExactMatch: v.ExactMatch, F1: v.F1);
    }

    /// <summary>Accuracy (and acc_norm, exact match and F1 where the results have them) over one task's item results.</summary>
    public static EvalSummary Summarize(string task, string mode, IReadOnlyList<ItemResult> results)
    {
        int n = results.Count, correct = results.Count(r => r.Correct);
        double? accNorm = mode == "loglik" && n > 0 ? results.Count(r => r.CorrectNorm == true) / (double)n : null;
        double? em = results.Any(r => r.ExactMatch is not null) ? results.Average(r => r.ExactMatch ?? 0) : null;
        double? f1 = results.Any(r => r.F1 is not null) ? results.Average(r => r.F1 ?? 0) : null;
        return new EvalSummary(task, mode, n, correct, n == 0 ? 0 : correct / (double)n, accNorm, em, f1);
    }

    static int ArgMax(double[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }
}
