using System.Globalization;
using System.Text.Json;

namespace PeftSharp.Evaluation;

/// <summary>Typed access to one data record's fields; every error names the file and the record's line.</summary>
public sealed class RecordReader(string path, int line)
{
    /// <summary>The data file, as named in errors.</summary>
    public string Path { get; } = path;
    /// <summary>The 1-based line (or record number) of the record in <see cref="Path"/>.</summary>
    public int Line { get; } = line;

    /// <summary>An exception whose message starts with <c>path:line:</c>.</summary>
    public PeftSharpException Error(string message) => new($"{Path}:{Line}: {message}");

    /// <summary>Whether <paramref name="record"/> is an object with a non-null <paramref name="field"/>.</summary>
    public static bool Has(JsonElement record, string field) =>
        record.ValueKind == JsonValueKind.Object && record.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null;

    /// <summary>A string field; numbers are accepted and written as JSON wrote them.</summary>
    public string String(JsonElement record, string field)
    {
        if (!record.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null)
            throw Error($"missing field \"{field}\"");
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString()!,
            JsonValueKind.Number => v.GetRawText(),
            JsonValueKind.True => "true",
            JsonValueKind.False => "false",
            _ => throw Error($"field \"{field}\": expected a string, got {Describe(v)}"),
        };
    }

    /// <summary>The first of the given field names that the record has, as a string.</summary>
    public string FirstString(JsonElement record, params string[] fields)
    {
        foreach (var f in fields)
            if (Has(record, f)) return String(record, f);
        throw Error($"missing field {string.Join(" or ", fields.Select(f => $"\"{f}\""))}");
    }

    /// <summary>An integer field (a JSON number or a string holding one).</summary>
    /// <exception cref="PeftSharpException">The field is missing or not an integer.</exception>
    public int Int(JsonElement record, string field)
    {
        string s = String(record, field);
        return int.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int n)
            ? n : throw Error($"field \"{field}\": expected an integer, got \"{s}\"");
    }

    /// <summary>A field holding a list of strings.</summary>
    /// <exception cref="PeftSharpException">The field is missing or not a list of strings.</exception>
    public IReadOnlyList<string> Strings(JsonElement record, string field)
    {
        if (!record.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) throw Error($"missing field \"{field}\"");
        if (v.ValueKind != JsonValueKind.Array) throw Error($"field \"{field}\": expected a list of strings, got {Describe(v)}");
        var list = new List<string>();
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.String) throw Error($"field \"{field}\": expected a list of strings, found {Describe(e)}");
            list.Add(e.GetString()!);
        }
        return list;
    }

    /// <summary>Names a JSON value's kind for error messages ("an object", "a list", "a string"...).</summary>
    public static string Describe(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "a list",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };
}
