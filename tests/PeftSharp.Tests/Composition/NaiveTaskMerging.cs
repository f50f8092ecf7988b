namespace PeftSharp.Tests.Composition;

/// <summary>
/// Task-tensor merging written from the papers' definitions with plain loops over flat arrays (the test's
/// independent reference for PeftSharp.Composition.TaskMerging): trim to the largest magnitudes, elect a sign per
/// entry, average the weighted entries that agree with it.
/// </summary>
public static class NaiveTaskMerging
{
    /// <summary>Keeps the ⌊density·n⌋ entries of largest magnitude (ties broken by the lower index), zeroes the rest.</summary>
    public static double[] Trim(double[] x, double density)
    {
        if (density >= 1) return (double[])x.Clone();
        int k = (int)(density * x.Length);
        var order = Enumerable.Range(0, x.Length).OrderByDescending(i => Math.Abs(x[i])).ThenBy(i => i).Take(k).ToHashSet();
        return x.Select((v, i) => order.Contains(i) ? v : 0).ToArray();
    }

    public static double[] Linear(IReadOnlyList<double[]> tasks, IReadOnlyList<double> weights)
    {
        var result = new double[tasks[0].Length];
        for (int t = 0; t < tasks.Count; t++)
            for (int i = 0; i < result.Length; i++) result[i] += weights[t] * tasks[t][i];
        return result;
    }

    /// <summary>TIES on already-trimmed tasks: sign by sum of values ("total") or of signs ("frequency"), zero counting as +.</summary>
    public static double[] ElectAndMerge(IReadOnlyList<double[]> trimmed, IReadOnlyList<double> weights, bool frequency)
    {
        int n = trimmed[0].Length;
        var result = new double[n];
        for (int i = 0; i < n; i++)
        {
            double vote = 0;
            foreach (var task in trimmed) vote += frequency ? Math.Sign(task[i]) : task[i];
            int majority = vote >= 0 ? 1 : -1;
            double sum = 0;
            int agreeing = 0;
            for (int t = 0; t < trimmed.Count; t++)
                if (Math.Sign(trimmed[t][i]) == majority) { sum += weights[t] * trimmed[t][i]; agreeing++; }
            result[i] = sum / Math.Max(agreeing, 1);
        }
        return result;
    }

    public static double[] Ties(IReadOnlyList<double[]> tasks, IReadOnlyList<double> weights, double density, bool frequency = false) =>
        ElectAndMerge(tasks.Select(t => Trim(t, density)).ToList(), weights, frequency);

    public static double[] MagnitudePrune(IReadOnlyList<double[]> tasks, IReadOnlyList<double> weights, double density) =>
        Linear(tasks.Select(t => Trim(t, density)).ToList(), weights);
}
