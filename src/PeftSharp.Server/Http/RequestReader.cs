using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace PeftSharp.Server.Http;

/// <summary>Reads a JSON request body and its fields, turning every mistake into a 400 (or 413) naming the field.</summary>
static class RequestReader
{
    public static async Task<JsonElement> ReadObject(HttpContext context)
    {
        if (context.Request.ContentLength is long n && context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>()?.MaxRequestBodySize is long max && n > max)
            throw new OpenAiError(413, $"request body of {n} bytes exceeds the server's limit of {max} bytes (--max-body-bytes)");
        try
        {
            using var doc = await JsonDocument.ParseAsync(context.Request.Body, cancellationToken: context.RequestAborted);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw OpenAiError.BadRequest("the request body must be a JSON object");
            return doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw OpenAiError.BadRequest($"the request body is not valid JSON: {e.Message.Split('\n')[0]}");
        }
        catch (BadHttpRequestException e) when (e.StatusCode == 413)
        {
            throw new OpenAiError(413, "request body exceeds the server's limit (--max-body-bytes)");
        }
    }

    static JsonElement? Field(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public static string? String(JsonElement obj, string name)
    {
        if (Field(obj, name) is not JsonElement v) return null;
        if (v.ValueKind != JsonValueKind.String) throw OpenAiError.BadRequest($"'{name}' must be a string", name);
        return v.GetString();
    }

    public static bool Bool(JsonElement obj, string name, bool fallback)
    {
        if (Field(obj, name) is not JsonElement v) return fallback;
        if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw OpenAiError.BadRequest($"'{name}' must be true or false", name);
        return v.GetBoolean();
    }

    public static double Number(JsonElement obj, string name, double fallback, double min, double max)
    {
        if (Field(obj, name) is not JsonElement v) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var d) || double.IsNaN(d))
            throw OpenAiError.BadRequest($"'{name}' must be a number", name);
        if (d < min || d > max) throw OpenAiError.BadRequest($"'{name}' must be between {min} and {max}, got {d}", name);
        return d;
    }

    public static long? Integer(JsonElement obj, string name, long min, long max)
    {
        if (Field(obj, name) is not JsonElement v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out var n)) throw OpenAiError.BadRequest($"'{name}' must be an integer", name);
        if (n < min || n > max) throw OpenAiError.BadRequest($"'{name}' must be between {min} and {max}, got {n}", name);
        return n;
    }

    /// <summary>"stop": a string or a list of up to 4 strings.</summary>
    public static IReadOnlyList<string> Stop(JsonElement obj)
    {
        if (Field(obj, "stop") is not JsonElement v) return [];
        if (v.ValueKind == JsonValueKind.String) return v.GetString()!.Length == 0 ? [] : [v.GetString()!];
        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() > 4 || v.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
            throw OpenAiError.BadRequest("'stop' must be a string or a list of at most 4 strings", "stop");
        return v.EnumerateArray().Select(e => e.GetString()!).Where(s => s.Length > 0).ToList();
    }
}
