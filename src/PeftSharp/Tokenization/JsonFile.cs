using System.Text.Json;

namespace PeftSharp.Tokenization;

/// <summary>An added token as Hugging Face stores it: matched verbatim in the text before the model runs.</summary>
internal sealed record AddedTokenInfo(int Id, string Content, bool Special);

/// <summary>Small helpers for the Hugging Face JSON files, with one-line errors that name the file.</summary>
internal static class JsonFile
{
    /// <summary>Parses <paramref name="path"/>, or returns null when the file does not exist.</summary>
    public static JsonDocument? TryRead(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var stream = File.OpenRead(path);
            return JsonDocument.Parse(stream, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException ex)
        {
            throw PeftSharp.IO.JsonErrors.Invalid(path, ex);
        }
    }

    /// <summary>A property of an object, or null when absent, null, or the element is not an object.</summary>
    public static JsonElement? Prop(this JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    /// <summary>The elements of an array, or none when the element is absent or not an array.</summary>
    public static IEnumerable<JsonElement> Items(this JsonElement? e) =>
        e is { ValueKind: JsonValueKind.Array } a ? a.EnumerateArray() : [];

    public static string? Str(this JsonElement e, string name) =>
        e.Prop(name) is { ValueKind: JsonValueKind.String } v ? v.GetString() : null;

    public static bool? Bool(this JsonElement e, string name) =>
        e.Prop(name) is { ValueKind: JsonValueKind.True or JsonValueKind.False } v ? v.GetBoolean() : null;

    /// <summary>
    /// A special-token setting such as <c>bos_token</c>: transformers writes it either as a plain string
    /// or as an AddedToken object <c>{"content": "...", ...}</c>.
    /// </summary>
    public static string? TokenContent(this JsonElement e, string name) => e.Prop(name) switch
    {
        { ValueKind: JsonValueKind.String } v => v.GetString(),
        { ValueKind: JsonValueKind.Object } v => v.Str("content"),
        _ => null,
    };

    /// <summary>Exception messages (ours must be one line) sometimes span several lines.</summary>
    public static string OneLine(string message) => string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries)).Trim();
}
