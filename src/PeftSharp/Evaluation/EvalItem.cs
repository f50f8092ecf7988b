namespace PeftSharp.Evaluation;

/// <summary>
/// One test question, ready to score in either mode.
/// </summary>
/// <param name="Prompt">The full generate-mode prompt (for LLM-Adapters data: its Alpaca-style template around the instruction).</param>
/// <param name="Gold">The reference answer as the task's metric compares it (e.g. "answer3", "576.0", "D").</param>
/// <param name="Context">The loglik-mode context that every choice continues; null when the task has no choices.</param>
/// <param name="Choices">The answer options (loglik mode scores " " + choice after <paramref name="Context"/>); empty when none.</param>
/// <param name="GoldIndex">Index of the correct choice in <paramref name="Choices"/>, or −1 when there are none.</param>
/// <param name="AnswerWords">The words a generated response is searched for (e.g. "answer1".."answer5"); the gold is one of them.</param>
/// <param name="References">Every acceptable answer text (extractive reading comprehension); empty otherwise.</param>
public sealed record EvalItem(
    string Prompt,
    string Gold,
    string? Context,
    IReadOnlyList<string> Choices,
    int GoldIndex,
    IReadOnlyList<string> AnswerWords,
    IReadOnlyList<string> References)
{
    /// <summary>The text put between the context and each choice (lm-evaluation-harness's target_delimiter, " " by default).</summary>
    public string ChoiceDelimiter { get; init; } = " ";
}
