using System.Text.Json;
using PeftSharp.Jinja;
using PeftSharp.Tokenization;

namespace PeftSharp.Training;

/// <summary>
/// JSONL training data, one JSON object per line (blank lines are skipped). The first record decides the
/// file's format and every line must follow it:
/// <list type="bullet">
/// <item>Alpaca: <c>{"instruction": …, "input": … (optional), "output": …}</c>, with Stanford Alpaca's prompt (<see cref="PromptFormats.Alpaca"/>);</item>
/// <item><c>{"prompt": …, "completion": …}</c>, concatenated as they are;</item>
/// <item><c>{"messages": [{"role": …, "content": …}, …]}</c>, rendered with the tokenizer's chat template as transformers'
/// <c>apply_chat_template</c> does (<see cref="PromptFormats.ChatTemplated"/>), or in PeftSharp's own format when the
/// tokenizer has none (<see cref="PromptFormats.Chat"/>);</item>
/// <item><c>{"text": …}</c>: plain documents, packed into blocks like <see cref="TextData"/>.</item>
/// </list>
/// Instruction records train on their responses only: prompt labels are −100 and each response is followed by EOS
/// (with a chat template, by whatever end-of-turn token the template writes).
/// </summary>
public static class InstructionData
{
    enum Format { Alpaca, PromptCompletion, Messages, Text }

    /// <summary>Reads and tokenizes a JSONL file; examples longer than <paramref name="maxLength"/> tokens are cut.</summary>
    /// <exception cref="PeftSharpException">A missing file, or a line that is not a record of the file's format (naming file and line).</exception>
    public static TrainingData LoadJsonl(string path, ModelTokenizer tokenizer, int maxLength)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: file not found");
        if (maxLength < 2) throw new PeftSharpException($"maximum sequence length must be at least 2 tokens, got {maxLength}");
        Format? format = null;
        int formatLine = 0;
        var records = new List<(int Line, IReadOnlyList<PromptSegment> Segments, int? TaskId)>();
        var documents = new List<string>();
        int lineNumber = 0, lastReplyOnly = 0;
        ChatTemplate? chatTemplate = null; // read once, when the first record says the file holds messages
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            using var json = ParseLine(path, lineNumber, line);
            var root = json.RootElement;
            var lineFormat = Detect(path, lineNumber, root);
            if (format is null)
            {
                (format, formatLine) = (lineFormat, lineNumber);
                if (format == Format.Messages) chatTemplate = ChatTemplate.FromTokenizer(tokenizer);
            }
            else if (lineFormat != format)
                throw Error(path, lineNumber, $"expected a {Describe(format.Value)} record like line {formatLine} (one file holds one format), got a {Describe(lineFormat)} record");
            int? taskId = OptionalTaskId(path, lineNumber, root);
            if (lineFormat == Format.Text)
            {
                if (taskId is not null) throw Error(path, lineNumber, "\"task_id\" is not supported with \"text\" records (they are packed into blocks); use prompt/completion, Alpaca or messages records");
                documents.Add(RequiredString(path, lineNumber, root, "text"));
            }
            else records.Add((lineNumber, Segments(path, lineNumber, root, lineFormat, chatTemplate, ref lastReplyOnly), taskId));
        }
        if (format is null) throw new PeftSharpException($"{path}: no records (expected one JSON object per line)");
        if (format == Format.Text) return TextData.Pack(tokenizer, documents, maxLength);

        var warnings = new List<string>();
        if (format == Format.Messages && chatTemplate is null)
            warnings.Add($"{path}: the tokenizer has no chat template; messages are formatted as <|role|>\\ncontent\\n with EOS after each assistant reply");
        if (lastReplyOnly > 0)
            warnings.Add($"{path}: for {lastReplyOnly} of {records.Count} conversations the chat template rewrites earlier turns as the conversation grows, so only their last assistant reply is trained on");
        var examples = new List<TrainingExample>();
        int truncated = 0, dropped = 0;
        var prefix = SpecialPrefix(tokenizer);
        foreach (var (line, segments, taskId) in records)
        {
            TrainingExample? example;
            bool wasTruncated;
            if (chatTemplate is null) (example, wasTruncated) = Tokenize(segments, tokenizer, maxLength, prefix);
            else example = TokenizeRendered(segments, tokenizer, maxLength, out wasTruncated);
            if (wasTruncated) truncated++;
            if (example is null) dropped++;
            else examples.Add(taskId is null ? example : example with { TaskId = taskId });
        }
        if (truncated > 0) warnings.Add($"{path}: {truncated} of {records.Count} examples were longer than {maxLength} tokens and were cut");
        if (dropped > 0) warnings.Add($"{path}: {dropped} examples had no response tokens left within {maxLength} tokens and were dropped");
        if (examples.Count == 0) throw new PeftSharpException($"{path}: no example has a response within {maxLength} tokens");
        return new TrainingData(examples, warnings);
    }

    /// <summary>
    /// Token ids of the segments (after the tokenizer's own BOS, if it adds one) with labels −100 on prompt
    /// segments and the ids themselves on responses, each response followed by EOS (trained on). Prompt and
    /// response are tokenized separately, so the loss starts exactly at the response's first token. Cut to
    /// <paramref name="maxLength"/>; null when no labelled token is left.
    /// </summary>
    /// <exception cref="PeftSharpException">The tokenizer has no EOS token.</exception>
    public static TrainingExample? Tokenize(IReadOnlyList<PromptSegment> segments, ModelTokenizer tokenizer, int maxLength) =>
        Tokenize(segments, tokenizer, maxLength, SpecialPrefix(tokenizer)).Example;

    static (TrainingExample? Example, bool Truncated) Tokenize(IReadOnlyList<PromptSegment> segments, ModelTokenizer tokenizer, int maxLength, int[] prefix)
    {
        int eos = tokenizer.EosTokenId ?? throw new PeftSharpException("the tokenizer has no EOS token, which instruction data needs to end each response");
        var ids = new List<int>(prefix);
        var labels = new List<int>(prefix.Select(_ => (int)CausalLMLoss.IgnoreIndex));
        foreach (var segment in segments)
        {
            var tokens = tokenizer.Encode(segment.Text, addSpecialTokens: false);
            ids.AddRange(tokens);
            if (segment.IsResponse)
            {
                labels.AddRange(tokens);
                ids.Add(eos);
                labels.Add(eos);
            }
            else labels.AddRange(tokens.Select(_ => (int)CausalLMLoss.IgnoreIndex));
        }
        bool truncated = ids.Count > maxLength;
        if (truncated)
        {
            ids.RemoveRange(maxLength, ids.Count - maxLength);
            labels.RemoveRange(maxLength, labels.Count - maxLength);
        }
        var example = new TrainingExample(ids.ToArray(), labels.ToArray());
        return (example.LabelledTokens == 0 ? null : example, truncated);
    }

    /// <summary>
    /// Token ids of a chat-template rendering, tokenized as one text without added special tokens (as
    /// transformers tokenizes <c>apply_chat_template</c>'s output), with labels on the tokens that hold reply
    /// characters (transformers' assistant mask: a token straddling a boundary counts as reply). Cut to
    /// <paramref name="maxLength"/>; null when no labelled token is left.
    /// </summary>
    public static TrainingExample? TokenizeRendered(IReadOnlyList<PromptSegment> segments, ModelTokenizer tokenizer, int maxLength) =>
        TokenizeRendered(segments, tokenizer, maxLength, out _);

    static TrainingExample? TokenizeRendered(IReadOnlyList<PromptSegment> segments, ModelTokenizer tokenizer, int maxLength, out bool truncated)
    {
        string text = string.Concat(segments.Select(s => s.Text));
        var ids = tokenizer.Encode(text, addSpecialTokens: false).ToArray();
        var labels = Enumerable.Repeat((int)CausalLMLoss.IgnoreIndex, ids.Length).ToArray();
        int offset = 0;
        foreach (var segment in segments)
        {
            int start = offset, end = offset + segment.Text.Length;
            offset = end;
            if (!segment.IsResponse) continue;
            int first = TokenBoundary(ids, tokenizer, text, start, includeStraddling: false);
            int last = TokenBoundary(ids, tokenizer, text, end, includeStraddling: true);
            for (int t = first; t < last; t++) labels[t] = ids[t];
        }
        truncated = ids.Length > maxLength;
        if (truncated)
        {
            ids = ids[..maxLength];
            labels = labels[..maxLength];
        }
        var example = new TrainingExample(ids, labels);
        return example.LabelledTokens == 0 ? null : example;
    }

    // The index of the first token of `ids` (the whole text's tokens) that is not wholly before character `at`:
    // the tokens text[..at] tokenizes to agree with `ids` up to there. With includeStraddling, a token that
    // holds characters on both sides of `at` counts as before it.
    static int TokenBoundary(int[] ids, ModelTokenizer tokenizer, string text, int at, bool includeStraddling)
    {
        if (at >= text.Length) return ids.Length;
        if (at == 0) return 0;
        var before = tokenizer.Encode(text[..at], addSpecialTokens: false);
        int common = 0;
        while (common < before.Count && common < ids.Length && before[common] == ids[common]) common++;
        bool straddles = common < before.Count;
        return includeStraddling && straddles ? Math.Min(common + 1, ids.Length) : common;
    }

    /// <summary>
    /// The special tokens the tokenizer puts before a text (Llama's BOS), found by locating a probe's plain ids
    /// inside its ids with special tokens. Any suffix (add_eos_token) is left out: responses add their own EOS.
    /// </summary>
    static int[] SpecialPrefix(ModelTokenizer tokenizer)
    {
        const string probe = "a";
        var with = tokenizer.Encode(probe, addSpecialTokens: true);
        var plain = tokenizer.Encode(probe, addSpecialTokens: false);
        for (int start = 0; start + plain.Count <= with.Count; start++)
            if (plain.Select((id, i) => with[start + i] == id).All(x => x))
                return with.Take(start).ToArray();
        return [];
    }

    static JsonDocument ParseLine(string path, int line, string text)
    {
        try
        {
            return JsonDocument.Parse(text);
        }
        catch (JsonException e)
        {
            throw PeftSharp.IO.JsonErrors.Invalid(path, e, line);
        }
    }

    static Format Detect(string path, int line, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw Error(path, line, $"expected a JSON object, got a JSON {root.ValueKind.ToString().ToLowerInvariant()}");
        if (root.TryGetProperty("messages", out _)) return Format.Messages;
        if (root.TryGetProperty("instruction", out _)) return Format.Alpaca;
        if (root.TryGetProperty("prompt", out _)) return Format.PromptCompletion;
        if (root.TryGetProperty("text", out _)) return Format.Text;
        var keys = string.Join(", ", root.EnumerateObject().Select(p => $"\"{p.Name}\""));
        throw Error(path, line,
            "expected \"instruction\" and \"output\" (Alpaca), \"prompt\" and \"completion\", \"messages\" ([{\"role\", \"content\"}]) or \"text\"; " +
            $"got keys {(keys.Length == 0 ? "(none)" : keys)}");
    }

    static IReadOnlyList<PromptSegment> Segments(string path, int line, JsonElement root, Format format, ChatTemplate? template, ref int lastReplyOnly)
    {
        switch (format)
        {
            case Format.Alpaca:
                return PromptFormats.Alpaca(
                    RequiredString(path, line, root, "instruction"), OptionalString(path, line, root, "input"), RequiredString(path, line, root, "output"));
            case Format.PromptCompletion:
                return PromptFormats.PromptCompletion(RequiredString(path, line, root, "prompt"), RequiredString(path, line, root, "completion"));
            default:
                var messages = root.GetProperty("messages");
                if (messages.ValueKind != JsonValueKind.Array)
                    throw Error(path, line, $"expected \"messages\" to be an array of {{\"role\", \"content\"}} objects, got a JSON {messages.ValueKind.ToString().ToLowerInvariant()}");
                var list = new List<(string, string)>();
                int index = 0;
                foreach (var message in messages.EnumerateArray())
                {
                    if (message.ValueKind != JsonValueKind.Object)
                        throw Error(path, line, $"expected messages[{index}] to be an object with \"role\" and \"content\"");
                    list.Add((RequiredString(path, line, message, "role", $"messages[{index}]."), RequiredString(path, line, message, "content", $"messages[{index}].")));
                    index++;
                }
                if (!list.Any(m => m.Item1 == "assistant"))
                    throw Error(path, line, "expected at least one message with role \"assistant\" (the replies are what is trained on)");
                if (template is null) return PromptFormats.Chat(list);
                try
                {
                    // The template sees every field of each message (tool_calls, name, …), not only role and content.
                    var values = (List<object?>)JinjaValues.FromJson(messages)!;
                    var segments = PromptFormats.ChatTemplated(template, values, out bool onlyLast);
                    if (onlyLast) lastReplyOnly++;
                    return segments;
                }
                catch (JinjaRaisedException e)
                {
                    throw Error(path, line, $"the tokenizer's chat template rejects this conversation: {e.TemplateMessage}");
                }
                catch (JinjaException e)
                {
                    throw Error(path, line, $"the tokenizer's chat template failed on this conversation: {e.Message}");
                }
        }
    }

    static string RequiredString(string path, int line, JsonElement obj, string key, string where = "")
    {
        if (!obj.TryGetProperty(key, out var value))
            throw Error(path, line, $"expected \"{where}{key}\" (a string), which is missing");
        if (value.ValueKind != JsonValueKind.String)
            throw Error(path, line, $"expected \"{where}{key}\" to be a string, got a JSON {value.ValueKind.ToString().ToLowerInvariant()}");
        return value.GetString()!;
    }

    static string? OptionalString(string path, int line, JsonElement obj, string key)
    {
        if (!obj.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return RequiredString(path, line, obj, key);
    }

    /// <summary>The optional <c>task_id</c> field (a non-negative integer) of a record, for task-conditioned methods.</summary>
    static int? OptionalTaskId(string path, int line, JsonElement obj)
    {
        if (!obj.TryGetProperty("task_id", out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int id) || id < 0)
            throw Error(path, line, $"expected \"task_id\" to be a non-negative integer, got {value.GetRawText()}");
        return id;
    }

    static string Describe(Format format) => format switch
    {
        Format.Alpaca => "Alpaca (instruction/output)",
        Format.PromptCompletion => "prompt/completion",
        Format.Messages => "messages",
        _ => "text",
    };

    static PeftSharpException Error(string path, int line, string message) => new($"{path}:{line}: {message}");
}
