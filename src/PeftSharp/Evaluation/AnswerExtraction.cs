using System.Text.RegularExpressions;

namespace PeftSharp.Evaluation;

/// <summary>
/// LLM-Adapters' answer extraction (github AGI-Edgerunners/LLM-Adapters, main branch: <c>extract_answer_number</c> and
/// <c>extract_answer_letter</c> in evaluate.py, <c>extract_answer</c> in commonsense_evaluate.py), rule for rule, quirks
/// included, so that accuracies are comparable with its tables. docs/evaluation.md lists the rules.
/// </summary>
public static partial class AnswerExtraction
{
    /// <summary>evaluate.py's tolerance: a number is right when |gold − prediction| ≤ 0.001.</summary>
    public const double MathTolerance = 0.001;

    /// <summary>
    /// <c>extract_answer_number</c>: drop every comma, find all <c>-?\d+\.?\d*</c>, take the last one as a float;
    /// +∞ (never within tolerance) when there is none.
    /// </summary>
    public static double LastNumber(string response)
    {
        var matches = NumberPattern().Matches(response.Replace(",", ""));
        if (matches.Count == 0) return double.PositiveInfinity;
        return PythonText.ParseFloat(matches[^1].Value) ?? double.PositiveInfinity;
    }

    /// <summary>Whether a prediction counts as right for a numeric gold answer: <c>abs(label - predict) &lt;= 0.001</c>.</summary>
    public static bool NumberMatches(double gold, double prediction) => Math.Abs(gold - prediction) <= MathTolerance;

    /// <summary>
    /// <c>extract_answer_letter</c> (AQuA): the first capital A, B, C, D or E anywhere in the stripped response —
    /// inside a word too ("After …" gives "A"); "" when there is none.
    /// </summary>
    public static string FirstOptionLetter(string response)
    {
        var m = LetterPattern().Match(PythonText.Strip(response));
        return m.Success ? m.Value : "";
    }

    /// <summary>
    /// <c>extract_answer</c> (commonsense): the first match of the task's alternation of answer words, case-sensitive and
    /// also inside longer words ("untrue" gives "true"); "" when there is none.
    /// </summary>
    public static string FirstAnswerWord(string response, IReadOnlyList<string> words)
    {
        var pattern = new Regex(string.Join('|', words.Select(Regex.Escape)), RegexOptions.CultureInvariant);
        var m = pattern.Match(PythonText.Strip(response));
        return m.Success ? m.Value : "";
    }

    /// <summary>
    /// The response as LLM-Adapters reads it: prompt and generation decoded together, split on "### Response:", the
    /// second piece, stripped. A generation that writes "### Response:" again is cut there.
    /// </summary>
    public static string ResponseText(string prompt, string generation)
    {
        var parts = (prompt + generation).Split("### Response:");
        // Without the marker Python's [1] would raise; the whole text is then the response.
        return PythonText.Strip(parts.Length > 1 ? parts[1] : parts[0]);
    }

    // Python's \d matches any Unicode decimal digit, as .NET's does.
    [GeneratedRegex(@"-?\d+\.?\d*")]
    private static partial Regex NumberPattern();

    [GeneratedRegex("A|B|C|D|E")]
    private static partial Regex LetterPattern();
}
