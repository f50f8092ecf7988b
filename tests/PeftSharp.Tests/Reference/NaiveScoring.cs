namespace PeftSharp.Tests.Reference;

/// <summary>Naive next-token negative log-likelihood scoring (natural log, double precision).</summary>
public static class NaiveScoring
{
    /// <summary>−log softmax(logits[row])[target], via log-sum-exp in double.</summary>
    public static double TokenNll(float[,] logits, int row, int target)
    {
        int v = logits.GetLength(1);
        NaiveOps.Check(target >= 0 && target < v, $"target id {target} outside vocabulary of {v}");
        var x = new double[v];
        for (int j = 0; j < v; j++) x[j] = logits[row, j];
        return NaiveOps.LogSumExp(x) - x[target];
    }

    /// <summary>Sum over t = 0..T−2 of −log softmax(logits[t])[ids[t+1]]; logits must have ids.Length rows.</summary>
    public static double TotalNll(float[,] logits, int[] ids)
    {
        NaiveOps.Check(logits.GetLength(0) == ids.Length, $"logits have {logits.GetLength(0)} rows for {ids.Length} ids");
        double total = 0;
        for (int t = 0; t + 1 < ids.Length; t++)
            total += TokenNll(logits, t, ids[t + 1]);
        return total;
    }

    /// <summary>
    /// Mean over t = 0..T−2 of −log softmax(logits[t])[ids[t+1]] (the last row predicts nothing).
    /// NaN when ids has fewer than 2 tokens.
    /// </summary>
    public static double MeanNll(float[,] logits, int[] ids)
        => ids.Length < 2 ? double.NaN : TotalNll(logits, ids) / (ids.Length - 1);

    /// <summary>
    /// The scoring windows for a file of <paramref name="length"/> tokens and model context <paramref name="context"/>:
    /// (start, count) with start = k(C − 1) and count = min(C, length − start), so consecutive windows share one token
    /// and every token after the first is predicted exactly once (the last token of a window is the first of the next).
    /// </summary>
    public static IReadOnlyList<(int Start, int Count)> Windows(int length, int context)
    {
        NaiveOps.Check(context > 1, "context must be at least 2");
        var windows = new List<(int, int)>();
        for (int start = 0; start == 0 || start + 1 < length; start += context - 1)
            windows.Add((start, Math.Min(context, length - start)));
        return windows;
    }

    /// <summary>
    /// Windowed scoring of a whole file: each window of <see cref="Windows"/> is run through
    /// <paramref name="logitsOf"/> on its own (no context carried across windows) and predicts its tokens 2..n
    /// from the ones before inside the window, so a window of n tokens predicts n−1 tokens (a 1-token window
    /// predicts nothing and is not evaluated). Returns the number of predicted tokens and their mean NLL
    /// (NaN when nothing was predicted).
    /// </summary>
    public static (int TokensPredicted, double MeanNll) WindowedMeanNll(int[] ids, int context, Func<int[], float[,]> logitsOf)
    {
        int predicted = 0;
        double total = 0;
        foreach (var (start, count) in Windows(ids.Length, context))
        {
            if (count < 2) continue;
            int[] window = ids[start..(start + count)];
            total += TotalNll(logitsOf(window), window);
            predicted += count - 1;
        }
        return (predicted, predicted == 0 ? double.NaN : total / predicted);
    }
}
