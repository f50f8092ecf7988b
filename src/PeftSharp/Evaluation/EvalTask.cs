using System.Text.Json;

namespace PeftSharp.Evaluation;

/// <summary>How a generated answer is read and judged.</summary>
public enum AnswerKind
{
    /// <summary>The first of the item's answer words in the response equals the gold word (LLM-Adapters commonsense).</summary>
    Word,
    /// <summary>The last number in the response is within 0.001 of the gold number (LLM-Adapters math).</summary>
    Number,
    /// <summary>The first capital A–E in the response equals the gold letter (LLM-Adapters AQuA).</summary>
    Letter,
    /// <summary>The response's first line, scored with SQuAD's exact match and F1 against every reference.</summary>
    Span,
}

/// <summary>
/// A benchmark as data: its name, the suite it belongs to, how a record becomes an <see cref="EvalItem"/> and how a
/// generated answer is judged. The known tasks are in <see cref="EvalTasks"/>.
/// </summary>
public sealed record EvalTask(
    string Name,
    string? Suite,
    AnswerKind Answer,
    int DefaultMaxNewTokens,
    Func<JsonElement, RecordReader, EvalItem> ReadItem)
{
    /// <summary>Whether loglik mode can score this task (its items have answer options).</summary>
    public bool HasChoices => Answer != AnswerKind.Number && Answer != AnswerKind.Span;
}
