using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.Evaluation;

/// <summary>
/// SQuAD's exact match and token F1 as its official evaluation script (evaluate-v2.0.py) computes them: answers are
/// normalised (lower case, punctuation removed, the articles a/an/the removed, white space collapsed), and a
/// prediction scores the best value over all reference answers.
/// </summary>
public static partial class SquadMetrics
{
    /// <summary><c>normalize_answer</c>: lower, remove punctuation (Python's string.punctuation), remove articles, fix white space.</summary>
    public static string Normalize(string text)
    {
        string lower = text.ToLowerInvariant();
        var noPunct = new StringBuilder(lower.Length);
        foreach (char c in lower)
            if (!IsAsciiPunctuation(c)) noPunct.Append(c);
        string noArticles = Articles().Replace(noPunct.ToString(), " ");
        return string.Join(' ', SplitWhite(noArticles));
    }

    /// <summary>1 when the normalised prediction equals the normalised reference, else 0.</summary>
    public static double ExactMatch(string prediction, string reference) =>
        Normalize(prediction) == Normalize(reference) ? 1.0 : 0.0;

    /// <summary>
    /// Token F1 between normalised prediction and reference (bag of tokens, counting repeats). When either side has
    /// no tokens, 1 if both are empty, else 0 — as the v2.0 script does for unanswerable questions.
    /// </summary>
    public static double F1(string prediction, string reference)
    {
        var pred = SplitWhite(Normalize(prediction));
        var gold = SplitWhite(Normalize(reference));
        if (pred.Length == 0 || gold.Length == 0) return pred.Length == gold.Length ? 1.0 : 0.0;
        var counts = new Dictionary<string, int>();
        foreach (var t in gold) counts[t] = counts.GetValueOrDefault(t) + 1;
        int common = 0;
        foreach (var t in pred)
            if (counts.GetValueOrDefault(t) > 0) { counts[t]--; common++; }
        if (common == 0) return 0.0;
        double precision = (double)common / pred.Length, recall = (double)common / gold.Length;
        return 2 * precision * recall / (precision + recall);
    }

    /// <summary>The best exact match over the references (an empty list counts as the single answer "").</summary>
    public static double BestExactMatch(string prediction, IReadOnlyList<string> references) =>
        (references.Count == 0 ? [""] : references).Max(r => ExactMatch(prediction, r));

    /// <summary>The best F1 over the references (an empty list counts as the single answer "").</summary>
    public static double BestF1(string prediction, IReadOnlyList<string> references) =>
        (references.Count == 0 ? [""] : references).Max(r => F1(prediction, r));

    // Python's str.split() with no argument: runs of white space, no empty pieces.
    static string[] SplitWhite(string s)
    {
        var parts = new List<string>();
        int i = 0;
        while (i < s.Length)
        {
            while (i < s.Length && PythonText.IsSpace(s[i])) i++;
            int start = i;
            while (i < s.Length && !PythonText.IsSpace(s[i])) i++;
            if (i > start) parts.Add(s[start..i]);
        }
        return [.. parts];
    }

    // string.punctuation: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~
    static bool IsAsciiPunctuation(char c) => c < 128 && char.IsPunctuation(c) || c is '$' or '+' or '<' or '=' or '>' or '^' or '`' or '|' or '~';

    [GeneratedRegex(@"\b(a|an|the)\b", RegexOptions.CultureInvariant)]
    private static partial Regex Articles();
}
