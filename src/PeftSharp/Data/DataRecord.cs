using System.Text;
using System.Text.Json;

namespace PeftSharp.Data;

/// <summary>The record formats <c>peftsharp train</c> reads (see Training/InstructionData), as detected from a record's fields.</summary>
public enum RecordFormat
{
    /// <summary>Alpaca: <c>instruction</c>, optional <c>input</c>, <c>output</c>.</summary>
    Alpaca,
    /// <summary>A <c>prompt</c> and a <c>completion</c>.</summary>
    PromptCompletion,
    /// <summary>A chat: <c>messages</c>, a list of objects with <c>role</c> and <c>content</c>.</summary>
    Messages,
    /// <summary>A plain <c>text</c> field: no prompt/reply split.</summary>
    Text,
}

/// <summary>
/// One line of an instruction JSONL file, read as <c>train</c> reads it: its format, its prompt side and its reply
/// side as plain text (for length checks and duplicate detection). <see cref="Problem"/> says why the line is not a
/// usable record, if it is not.
/// </summary>
public sealed record DataRecord(int Line, string Raw, RecordFormat? Format, string Prompt, string Reply, string? Problem)
{
    /// <summary>Everything the record says, prompt then reply: what duplicates are judged on.</summary>
    public string Content => Reply.Length == 0 ? Prompt : Prompt + "\n" + Reply;

    /// <summary>Characters in the prompt and the reply together (what <see cref="CleanOptions.MaxChars"/> limits).</summary>
    public int Characters => Prompt.Length + Reply.Length;

    /// <summary>Parses one non-blank line. Never throws for bad content: a line that is not a record gets a <see cref="Problem"/>.</summary>
    public static DataRecord Parse(int line, string raw)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(raw); }
        catch (JsonException e) { return new DataRecord(line, raw, null, "", "", $"not JSON ({e.Message.Split('\n')[0]})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return new DataRecord(line, raw, null, "", "", "not a JSON object");
            if (root.TryGetProperty("messages", out var messages)) return FromMessages(line, raw, messages);
            if (root.TryGetProperty("instruction", out _))
            {
                string prompt = Join(Str(root, "instruction"), Str(root, "input"));
                return new DataRecord(line, raw, RecordFormat.Alpaca, prompt, Str(root, "output") ?? "", Str(root, "output") is null ? "no \"output\"" : null);
            }
            if (root.TryGetProperty("prompt", out _))
                return new DataRecord(line, raw, RecordFormat.PromptCompletion, Str(root, "prompt") ?? "", Str(root, "completion") ?? "",
                                      Str(root, "completion") is null ? "no \"completion\"" : null);
            if (root.TryGetProperty("text", out _)) return new DataRecord(line, raw, RecordFormat.Text, Str(root, "text") ?? "", "", null);
            return new DataRecord(line, raw, null, "", "", "no known fields (instruction/output, prompt/completion, messages, text)");
        }
    }

    static DataRecord FromMessages(int line, string raw, JsonElement messages)
    {
        if (messages.ValueKind != JsonValueKind.Array) return new DataRecord(line, raw, RecordFormat.Messages, "", "", "\"messages\" is not a list");
        var prompt = new StringBuilder();
        var reply = new StringBuilder();
        foreach (var m in messages.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object) return new DataRecord(line, raw, RecordFormat.Messages, "", "", "a message is not an object");
            string role = Str(m, "role") ?? "";
            string content = Str(m, "content") ?? "";
            (role == "assistant" ? reply : prompt).Append(role).Append(": ").Append(content).Append('\n');
        }
        return new DataRecord(line, raw, RecordFormat.Messages, prompt.ToString(), reply.ToString(), null);
    }

    static string? Str(JsonElement e, string field) =>
        e.TryGetProperty(field, out var v) ? v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Null => null,
            _ => v.GetRawText(),
        } : null;

    static string Join(string? a, string? b) => string.IsNullOrEmpty(b) ? a ?? "" : (a ?? "") + "\n" + b;
}
