using System.Text.Json;

namespace PeftSharp.IO;

/// <summary>
/// One-line messages for malformed JSON that say which file, line and column, and what was wrong there, in plain words
/// (instead of System.Text.Json's "'x' is an invalid start of a value. LineNumber: 0 | BytePositionInLine: 5.").
/// </summary>
public static class JsonErrors
{
    /// <summary>
    /// "FILE: invalid JSON at line L, column C: WHAT", or "FILE:LINE: invalid JSON at column C: WHAT" for a file read a line
    /// at a time (JSONL, <paramref name="line"/> given). Lines and columns count from 1, columns in UTF-8 bytes as the parser reports them.
    /// </summary>
    public static PeftSharpException Invalid(string file, JsonException e, int? line = null)
    {
        long l = (e.LineNumber ?? 0) + 1, c = (e.BytePositionInLine ?? 0) + 1;
        string where = e.LineNumber is null ? "" : line is null ? $" at line {l}, column {c}" : $" at column {c}";
        if (line is not null) file = $"{file}:{line}"; // JSONL: the file's line, as compilers write it
        if (e.Path is { Length: > 1 } path && e.Message.StartsWith("The JSON value could not be converted", StringComparison.Ordinal))
            return new PeftSharpException($"{file}: field '{path.TrimStart('$', '.')}'{where} has the wrong type for its value", e);
        return new PeftSharpException($"{file}: invalid JSON{where}: {Reason(e.Message)}", e);
    }

    /// <summary>
    /// Reads a JSON file whose top level must be an object (a config file): malformed JSON is <see cref="Invalid"/>'s
    /// one-line error, any other top level "FILE: expected a JSON object at the top level".
    /// </summary>
    public static System.Text.Json.Nodes.JsonObject ReadObjectFile(string path)
    {
        try
        {
            return System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path)) as System.Text.Json.Nodes.JsonObject
                ?? throw new PeftSharpException($"{path}: expected a JSON object at the top level");
        }
        catch (JsonException e)
        {
            throw Invalid(path, e);
        }
    }

    // System.Text.Json's reader messages, mapped to short plain statements.
    static string Reason(string message) => message switch
    {
        _ when message.Contains("is an invalid start of a value") => "expected a value (a string, number, object, array, true, false or null)",
        _ when message.Contains("Expected end of string") => "a string is not closed",
        _ when message.Contains("trailing comma") || message.Contains("TrailingComma") => "a comma before a closing bracket",
        _ when message.Contains("is invalid after a value") => "expected a comma or a closing bracket after the value",
        _ when message.Contains("is invalid after a property name") => "expected ':' after the property name",
        _ when message.Contains("is invalid after a single JSON value") => "more text after the end of the JSON value",
        _ when message.Contains("Expected depth to be zero") || message.Contains("end of data") || message.Contains("does not contain any JSON tokens")
            => "the text ends before the JSON value is complete",
        _ when message.Contains("start of a property name") => "expected a property name in double quotes",
        _ when message.Contains("invalid within a JSON string") => "a control character or bad escape inside a string",
        _ when message.Contains("'/'") || message.Contains("comment") => "comments are not allowed",
        _ => "malformed JSON",
    };
}
