using PeftSharp.Jinja;
using PeftSharp.Tokenization;

namespace PeftSharp.Training;

/// <summary>A piece of a training conversation: prompt text (no loss) or a response (loss, followed by EOS).</summary>
public sealed record PromptSegment(string Text, bool IsResponse);

/// <summary>
/// How instruction records become text. Each format yields segments; <see cref="InstructionData.Tokenize(IReadOnlyList{PromptSegment}, PeftSharp.Tokenization.ModelTokenizer, int)"/> turns
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
    /// <c>messages</c> rendered with the model's chat template, as transformers' <c>apply_chat_template</c> would:
    /// the segments are the rendered text cut into prompt and reply pieces, and already hold whatever the
    /// template writes (BOS, role headers, end-of-turn tokens), so nothing is added when they are tokenized.
    /// </summary>
    /// <remarks>
    /// The replies (with loss) are found as transformers and TRL find them: from the template's
    /// <c>{% generation %}</c> blocks when it has them; otherwise reply i is what rendering messages[..i+1]
    /// adds to rendering messages[..i] with the generation prompt, which is the reply, its end-of-turn token
    /// and whatever the template puts after it. A template that rewrites earlier turns as a conversation grows
    /// (Qwen3 drops old reasoning, for example) gives no such growing prefixes; then only the last reply is
    /// trained on (<paramref name="onlyLastReply"/> is set).
    /// </remarks>
    /// <param name="messages">Template values (see <see cref="JinjaValues.FromJson"/>), each a dict with at least "role".</param>
    /// <exception cref="JinjaException">The template failed, or rejected the conversation with raise_exception.</exception>
    public static IReadOnlyList<PromptSegment> ChatTemplated(ChatTemplate template, IReadOnlyList<object?> messages, out bool onlyLastReply)
    {
        onlyLastReply = false;
        if (template.HasGenerationBlocks)
        {
            var (text, spans) = template.RenderWithGenerationSpans(messages, addGenerationPrompt: false);
            return Cut(text, spans);
        }
        string full = template.Render(messages, addGenerationPrompt: false);
        var replies = Enumerable.Range(0, messages.Count).Where(i => IsAssistant(messages[i])).ToList();
        List<(int Start, int End)>? growing = [];
        foreach (int i in replies)
        {
            var span = ReplySpan(template, messages, i, full);
            if (span is null || (growing.Count > 0 && span.Value.Start < growing[^1].End))
            {
                growing = null;
                break;
            }
            growing.Add(span.Value);
        }
        if (growing is not null) return Cut(full, growing);

        onlyLastReply = true;
        var last = replies.Count > 0 ? ReplySpan(template, messages, replies[^1], full) : null;
        if (last is null)
            throw new JinjaException("the chat template's rendering of the conversation does not start with its rendering of the turns before the last reply, so the reply cannot be found", 0);
        return Cut(full, [last.Value]);
    }

    static bool IsAssistant(object? message) =>
        message is OrderedDictionary<string, object?> m && m.TryGetValue("role", out var role) && role is "assistant";

    // Where reply i sits in the full rendering: after messages[..i] with the generation prompt, up to the end of messages[..i+1].
    static (int Start, int End)? ReplySpan(ChatTemplate template, IReadOnlyList<object?> messages, int i, string full)
    {
        string prompt = template.Render(messages.Take(i).ToList(), addGenerationPrompt: true);
        string withReply = template.Render(messages.Take(i + 1).ToList(), addGenerationPrompt: false);
        if (!withReply.StartsWith(prompt, StringComparison.Ordinal) || !full.StartsWith(withReply, StringComparison.Ordinal)) return null;
        return (prompt.Length, withReply.Length);
    }

    static List<PromptSegment> Cut(string text, IReadOnlyList<(int Start, int End)> replies)
    {
        var segments = new List<PromptSegment>();
        int done = 0;
        foreach (var (start, end) in replies)
        {
            if (start > done) segments.Add(new PromptSegment(text[done..start], false));
            if (end > start) segments.Add(new PromptSegment(text[start..end], true));
            done = Math.Max(done, end);
        }
        if (done < text.Length) segments.Add(new PromptSegment(text[done..], false));
        return segments;
    }

    /// <summary>
    /// PeftSharp's own chat format, used for <c>messages</c> records when the tokenizer has no chat template. Each message is a header line
    /// <c>&lt;|role|&gt;</c> followed by its content; a non-assistant message ends with a newline, an assistant
    /// message ends with EOS instead. Only assistant contents (and their EOS) carry loss:
    /// <code>
    /// &lt;|system|&gt;\nYou are terse.\n&lt;|user|&gt;\nHi\n&lt;|assistant|&gt;\nHello.&lt;EOS&gt;
    /// </code>
    /// To prompt a model trained this way, end the prompt with <c>&lt;|assistant|&gt;\n</c> and stop at EOS.
    /// </summary>
    /// <remarks>
    /// Role headers are plain text, so they take a few tokens each unless the tokenizer has them as added tokens.
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
