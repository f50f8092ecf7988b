using System.Text.Encodings.Web;
using System.Text.Json;
using PeftSharp.Tensors;

namespace PeftSharp.Evaluation;

/// <summary>Per-item JSON Lines (<c>--output</c>) and the reading of given generations (<c>--predictions</c>).</summary>
public static class EvalOutput
{
    static readonly JsonWriterOptions Writer = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// One object per item: index, prompt, gold, prediction, correct; plus choices, loglikelihoods (and correct_norm) in loglik
    /// mode, generation (and exact_match, f1 for extractive tasks) in generate mode; task and adapter when given.
    /// Written to a temporary file and renamed into place.
    /// </summary>
    public static void WriteJsonl(string path, IEnumerable<(string? Adapter, string? Task, ItemResult Item)> rows)
    {
        AtomicFile.Write(path, stream =>
        {
            foreach (var (adapter, task, r) in rows)
            {
                using (var w = new Utf8JsonWriter(stream, Writer))
                {
                    w.WriteStartObject();
                    if (adapter is not null) w.WriteString("adapter", adapter);
                    if (task is not null) w.WriteString("task", task);
                    w.WriteNumber("index", r.Index);
                    w.WriteString("prompt", r.Prompt);
                    w.WriteString("gold", r.Gold);
                    w.WriteString("prediction", r.Prediction);
                    w.WriteBoolean("correct", r.Correct);
                    if (r.Choices is not null)
                    {
                        w.WriteStartArray("choices");
                        foreach (var c in r.Choices) w.WriteStringValue(c);
                        w.WriteEndArray();
                    }
                    if (r.Loglikelihoods is not null)
                    {
                        w.WriteStartArray("loglikelihoods");
                        foreach (var ll in r.Loglikelihoods) w.WriteNumberValue(ll);
                        w.WriteEndArray();
                    }
                    if (r.CorrectNorm is bool norm) w.WriteBoolean("correct_norm", norm);
                    if (r.Generation is not null) w.WriteString("generation", r.Generation);
                    if (r.ExactMatch is double em) w.WriteNumber("exact_match", em);
                    if (r.F1 is double f1) w.WriteNumber("f1", f1);
                    w.WriteEndObject();
                }
                stream.WriteByte((byte)'\n');
            }
        });
    }

    /// <summary>Reads <c>{"generation": "..."}</c> per line (blank lines skipped); errors name the file and line.</summary>
    public static List<string> ReadGenerations(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"--predictions {path}: file not found");
        var list = new List<string>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException e) { throw new PeftSharpException($"{path}:{lineNumber}: not a JSON object ({e.Message.Split('\n')[0]})"); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("generation", out var g) || g.ValueKind != JsonValueKind.String)
                    throw new PeftSharpException($"{path}:{lineNumber}: expected {{\"generation\": \"...\"}}");
                list.Add(g.GetString()!);
            }
        }
        return list;
    }
}
