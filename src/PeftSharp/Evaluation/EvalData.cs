using System.Text;
using System.Text.Json;

namespace PeftSharp.Evaluation;

/// <summary>
/// Reads a task's test file: a JSON list of records (LLM-Adapters' <c>dataset/&lt;task&gt;/test.json</c>), JSON Lines
/// (one record per line, blank lines skipped), for squad the official nested SQuAD file
/// (<c>{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}</c>), or a <c>.csv</c> file with a header row whose
/// column names are the record's fields (the official story cloze files: InputSentence1..4,
/// RandomFifthSentenceQuiz1/2, AnswerRightEnding), read by .NET's RFC 4180 parser. Errors name the file and line.
/// </summary>
public static class EvalData
{
    /// <summary>
    /// Reads the items of <paramref name="task"/> from a JSON list, JSON Lines, SQuAD or CSV file (see the class summary), at most <paramref name="limit"/> of them.
    /// </summary>
    /// <exception cref="PeftSharpException">The file is missing or a record lacks a field the task needs; the message names the file and line.</exception>
    public static IReadOnlyList<EvalItem> Load(string path, EvalTask task, int? limit = null)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"--data {path}: file not found");
        if (Path.GetExtension(path).Equals(".csv", StringComparison.OrdinalIgnoreCase)) return ReadCsv(path, task, limit);
        var bytes = File.ReadAllBytes(path);
        var items = new List<EvalItem>();
        int start = 0;
        if (bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF) start = 3;
        int first = start;
        while (first < bytes.Length && bytes[first] is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n') first++;
        if (first == bytes.Length) throw new PeftSharpException($"{path}: no records (expected a JSON list or one JSON object per line)");
        var text = bytes.AsMemory(start);
        bool wholeDocument = bytes[first] == (byte)'[' || (task.Name == "squad" && LooksLikeSquadFile(text.Span));
        if (wholeDocument) ReadDocument(path, text, task, items, limit);
        else ReadLines(path, text, task, items, limit);
        if (items.Count == 0) throw new PeftSharpException($"{path}: no records");
        return items;
    }

    static IReadOnlyList<EvalItem> ReadCsv(string path, EvalTask task, int? limit)
    {
        var items = new List<EvalItem>();
        using var parser = new Microsoft.VisualBasic.FileIO.TextFieldParser(path, Encoding.UTF8) { HasFieldsEnclosedInQuotes = true, TrimWhiteSpace = false };
        parser.SetDelimiters(",");
        string[]? header;
        try { header = parser.ReadFields(); }
        catch (Microsoft.VisualBasic.FileIO.MalformedLineException e) { throw new PeftSharpException($"{path}:{e.LineNumber}: not valid CSV (an unclosed quote?)"); }
        if (header is null || header.Length == 0) throw new PeftSharpException($"{path}: no header row (expected column names such as InputSentence1)");
        while (!parser.EndOfData && (limit is null || items.Count < limit))
        {
            long line = parser.LineNumber;
            string[]? fields;
            try { fields = parser.ReadFields(); }
            catch (Microsoft.VisualBasic.FileIO.MalformedLineException e) { throw new PeftSharpException($"{path}:{e.LineNumber}: not valid CSV (an unclosed quote?)"); }
            if (fields is null || fields.All(string.IsNullOrEmpty)) continue;
            if (fields.Length != header.Length)
                throw new PeftSharpException($"{path}:{line}: {fields.Length} fields, the header has {header.Length}");
            var record = JsonSerializer.SerializeToElement(header.Zip(fields).ToDictionary(p => p.First, p => p.Second));
            items.Add(task.ReadItem(record, new RecordReader(path, (int)line)));
        }
        if (items.Count == 0) throw new PeftSharpException($"{path}: no records");
        return items;
    }

    static bool LooksLikeSquadFile(ReadOnlySpan<byte> text)
    {
        try
        {
            var reader = new Utf8JsonReader(text);
            // One object whose first property is "version" or "data" (the official files) is a whole document.
            return reader.Read() && reader.TokenType == JsonTokenType.StartObject && reader.Read()
                   && reader.TokenType == JsonTokenType.PropertyName && (reader.ValueTextEquals("data") || reader.ValueTextEquals("version"));
        }
        catch (JsonException) { return false; }
    }

    static void ReadLines(string path, ReadOnlyMemory<byte> text, EvalTask task, List<EvalItem> items, int? limit)
    {
        int lineNumber = 0;
        var span = text.Span;
        int pos = 0;
        while (pos <= span.Length && (limit is null || items.Count < limit))
        {
            int nl = span[pos..].IndexOf((byte)'\n');
            int end = nl < 0 ? span.Length : pos + nl;
            lineNumber++;
            var line = Encoding.UTF8.GetString(span[pos..end]).TrimEnd('\r');
            pos = end + 1;
            if (!string.IsNullOrWhiteSpace(line))
            {
                JsonDocument doc;
                try { doc = JsonDocument.Parse(line); }
                catch (JsonException e) { throw new PeftSharpException($"{path}:{lineNumber}: not a JSON object ({FirstLine(e.Message)})"); }
                using (doc)
                {
                    if (doc.RootElement.ValueKind != JsonValueKind.Object)
                        throw new PeftSharpException($"{path}:{lineNumber}: expected a JSON object, got {RecordReader.Describe(doc.RootElement)}");
                    items.Add(task.ReadItem(doc.RootElement, new RecordReader(path, lineNumber)));
                }
            }
            if (nl < 0) break;
        }
    }

    static void ReadDocument(string path, ReadOnlyMemory<byte> text, EvalTask task, List<EvalItem> items, int? limit)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(text, new JsonDocumentOptions { AllowTrailingCommas = false }); }
        catch (JsonException e) { throw new PeftSharpException($"{path}:{(e.LineNumber ?? 0) + 1}: invalid JSON ({FirstLine(e.Message)})"); }
        using (doc)
        {
            var lines = ElementLines(text.Span);
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object)
            {
                ReadSquadDocument(path, root, task, items, limit);
                return;
            }
            int i = 0;
            foreach (var record in root.EnumerateArray())
            {
                if (limit is not null && items.Count >= limit) break;
                int line = i < lines.Count ? lines[i] : 0;
                i++;
                if (record.ValueKind != JsonValueKind.Object)
                    throw new PeftSharpException($"{path}:{line}: expected a JSON object, got {RecordReader.Describe(record)}");
                items.Add(task.ReadItem(record, new RecordReader(path, line)));
            }
        }
    }

    /// <summary>The official SQuAD file: every question of every paragraph, with the paragraph's context.</summary>
    static void ReadSquadDocument(string path, JsonElement root, EvalTask task, List<EvalItem> items, int? limit)
    {
        var at = new RecordReader(path, 1);
        if (!root.TryGetProperty("data", out var data) || data.ValueKind != JsonValueKind.Array)
            throw at.Error("expected a JSON list of records, or SQuAD's {\"data\": [...]}");
        foreach (var article in data.EnumerateArray())
            foreach (var paragraph in List(article, "paragraphs", at))
            {
                string context = at.String(paragraph, "context");
                foreach (var qa in List(paragraph, "qas", at))
                {
                    if (limit is not null && items.Count >= limit) return;
                    var answers = List(qa, "answers", at).Select(a => at.String(a, "text")).ToList();
                    var record = JsonSerializer.SerializeToElement(new Dictionary<string, object>
                    {
                        ["context"] = context, ["question"] = at.String(qa, "question"), ["answers"] = answers,
                    });
                    items.Add(task.ReadItem(record, at));
                }
            }
    }

    static IEnumerable<JsonElement> List(JsonElement e, string field, RecordReader at) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.Array
            ? v.EnumerateArray() : throw at.Error($"SQuAD file: expected a list \"{field}\"");

    /// <summary>The 1-based line on which each element of the top-level list starts.</summary>
    static List<int> ElementLines(ReadOnlySpan<byte> text)
    {
        var starts = new List<long>();
        var reader = new Utf8JsonReader(text);
        while (reader.Read())
        {
            if (reader.CurrentDepth == 1 && reader.TokenType is not (JsonTokenType.EndArray or JsonTokenType.EndObject))
            {
                starts.Add(reader.TokenStartIndex);
                if (reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray) reader.Skip();
            }
        }
        var lines = new List<int>(starts.Count);
        int line = 1;
        long pos = 0;
        foreach (var s in starts)
        {
            for (; pos < s; pos++) if (text[(int)pos] == (byte)'\n') line++;
            lines.Add(line);
        }
        return lines;
    }

    static string FirstLine(string s) => s.Split('\n')[0];
}
