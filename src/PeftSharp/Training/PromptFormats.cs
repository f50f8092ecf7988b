namespace PeftSharp.Training;

/// <summary>A piece of a training conversation: prompt text (no loss) or a response (loss, followed by EOS).</summary>
public sealed record PromptSegment(string Text, bool IsResponse);

/// <summary>
/// How instruction records become text. Each format yields segments; <see cref="InstructionData.Tokenize"/> turns
/// them into ids with loss on the responses only.
/// </summary>
public static class PromptFormats
{
    /// <summary>Stanford Alpaca's prompt for records with a non-empty <c>input</c> (tatsu-lab/stanford_alpaca, train.py).</summary>
    public const string AlpacaWithInput =
        "Below is an instruction that describes a task, paired with an input that provides further context. " +
        "Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";

    /// <summary>Stanford Alpaca's prompt for records without <c>input</c> (or with an empty one).</summary>
    public const string AlpacaNoInput =
        "Below is an instruction that describes a task. " +
        "Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\n{instruction}\n\n### Response:\n";

    /// <summary>The Alpaca prompt (no loss), then <paramref name="output"/> (loss).</summary>
    public static IReadOnlyList<PromptSegment> Alpaca(string instruction, string? input, string output)
    {
        string prompt = string.IsNullOrEmpty(input)
            ? AlpacaNoInput.Replace("{instruction}", instruction)
            : AlpacaWithInput.Replace("{instruction}", instruction).Replace("{input}", input);
        return [new PromptSegment(prompt, false), new PromptSegment(output, true)];
    }

    /// <summary>The prompt verbatim (no loss), then the completion verbatim (loss): no text is added between them.</summary>
    public static IReadOnlyList<PromptSegment> PromptCompletion(string prompt, string completion) =>
        [new PromptSegment(prompt, false), new PromptSegment(completion, true)];

    /// <summary>
    /// PeftSharp's own chat format, used for <c>messages</c> records. Each message is a header line
    /// <c>&lt;|role|&gt;</c> followed by its content; a non-assistant message ends with a newline, an assistant
    /// message ends with EOS instead. Only assistant contents (and their EOS) carry loss:
    /// <code>
    /// &lt;|system|&gt;\nYou are terse.\n&lt;|user|&gt;\nHi\n&lt;|assistant|&gt;\nHello.&lt;EOS&gt;
    /// </code>
    /// To prompt a model trained this way, end the prompt with <c>&lt;|assistant|&gt;\n</c> and stop at EOS.
    /// </summary>
    /// <remarks>
    /// The model's own chat template (Jinja, in tokenizer_config.json) is not used: rendering arbitrary Jinja
    /// templates correctly needs a Jinja engine, which PeftSharp does not have. Role headers are plain text, so
    /// they take a few tokens each unless the tokenizer happens to have them as added tokens.
    /// </remarks>
    public static IReadOnlyList<PromptSegment> Chat(IReadOnlyList<(string Role, string Content)> messages)
    {
        var segments = new List<PromptSegment>();
        var prompt = new System.Text.StringBuilder();
        foreach (var (role, content) in messages)
        {
            prompt.Append("<|").Append(role).Append("|>\n");
            if (role == "assistant")
            {
                segments.Add(new PromptSegment(prompt.ToString(), false));
                segments.Add(new PromptSegment(content, true));
                prompt.Clear();
            }
            else prompt.Append(content).Append('\n');
        }
        if (prompt.Length > 0) segments.Add(new PromptSegment(prompt.ToString(), false));
        return segments;
    }
}
