using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace PeftSharp.Server.Http;

/// <summary>An error answered in OpenAI's shape: <c>{"error": {"message", "type", "param", "code"}}</c> with an HTTP status.</summary>
public sealed class OpenAiError(int status, string message, string? param = null, string? code = null, string? type = null) : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type ?? (status >= 500 ? "server_error" : "invalid_request_error");

    public object Body => new { error = new { message = Message, type = Type, param = Param, code = Code } };

    public static OpenAiError BadRequest(string message, string? param = null) => new(400, message, param);

    public static OpenAiError ModelNotFound(string model) =>
        new(404, $"The model `{model}` does not exist.", "model", "model_not_found");

    public async Task WriteAsync(HttpContext context)
    {
        context.Response.StatusCode = Status;
        context.Response.ContentType = "application/json";
        // The unread rest of a too-large body is not drained: close the connection after the answer.
        if (Status == 413) context.Response.Headers.Connection = "close";
        await context.Response.WriteAsync(JsonSerializer.Serialize(Body, Json.Options));
        await context.Response.CompleteAsync();
    }
}

static class Json
{
    public static readonly JsonSerializerOptions Options = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static string Serialize(object value) => JsonSerializer.Serialize(value, Options);
}
