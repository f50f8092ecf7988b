using System.Globalization;

namespace PeftSharp.Evaluation;

/// <summary>What was read from one generated answer and whether it is right.</summary>
/// <param name="Prediction">The extracted answer (a word, a letter, a number as Python prints it, or a span).</param>
public sealed record GenerationVerdict(string Prediction, bool Correct, double? ExactMatch = null, double? F1 = null);

/// <summary>Judges a generation by the task's <see cref="AnswerKind"/> (rules in docs/evaluation.md).</summary>
public static class GenerationJudge
{
    /// <summary>
    /// Extracts the answer from <paramref name="generation"/> (the text after the prompt) and compares it with the item's gold answer.
    /// </summary>
    public static GenerationVerdict Judge(EvalTask task, EvalItem item, string generation)
    {
        string response = AnswerExtraction.ResponseText(item.Prompt, generation);
        switch (task.Answer)
        {
            case AnswerKind.Word:
            {
                string word = AnswerExtraction.FirstAnswerWord(response, item.AnswerWords);
                return new GenerationVerdict(word, word == item.Gold);
            }
            case AnswerKind.Letter:
            {
                string letter = AnswerExtraction.FirstOptionLetter(response);
                return new GenerationVerdict(letter, letter == item.Gold);
            }
            case AnswerKind.Number:
            {
                double predicted = AnswerExtraction.LastNumber(response);
                double gold = PythonText.ParseFloat(item.Gold) ?? double.NaN;
                return new GenerationVerdict(PythonFloat(predicted), AnswerExtraction.NumberMatches(gold, predicted));
            }
            default:
            {
                string span = PythonText.Strip(response.Split('\n')[0]);
                double em = SquadMetrics.BestExactMatch(span, item.References), f1 = SquadMetrics.BestF1(span, item.References);
                return new GenerationVerdict(span, em == 1.0, em, f1);
            }
        }
    }

    /// <summary>A float as Python's repr writes it for the values seen here (inf, 576.0, 0.5).</summary>
    public static string PythonFloat(double v)
    {
        if (double.IsPositiveInfinity(v)) return "inf";
        if (double.IsNegativeInfinity(v)) return "-inf";
        if (double.IsNaN(v)) return "nan";
        string s = v.ToString("R", CultureInfo.InvariantCulture);
        return s.Contains('.') || s.Contains('E') ? s : s + ".0";
    }
}
