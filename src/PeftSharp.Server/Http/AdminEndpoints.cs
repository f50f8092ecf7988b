using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Engine;
using PeftSharp.Server.Metrics;

namespace PeftSharp.Server.Http;

/// <summary>/v1/models, vLLM's runtime adapter endpoints, /health, /metrics, and the API-key check.</summary>
sealed class AdminEndpoints(ServedModel served, AdapterManager adapters, BatchEngine engine, ServerOptions options, ServerMetrics metrics)
{
    readonly long started = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public Task Models(HttpContext context)
    {
        var data = new List<object> { new { id = served.Name, @object = "model", created = started, owned_by = "peftsharp", root = served.Name, parent = (string?)null } };
        foreach (var (name, _, _) in adapters.List())
            data.Add(new { id = name, @object = "model", created = started, owned_by = "peftsharp", root = name, parent = (string?)served.Name });
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsync(Json.Serialize(new { @object = "list", data }));
    }

    /// <summary>vLLM's POST /v1/load_lora_adapter {"lora_name", "lora_path"}: 200 with a text line on success.</summary>
    public async Task LoadAdapter(HttpContext context)
    {
        try
        {
            RefuseUnlessAllowed();
            var body = await RequestReader.ReadObject(context);
            string name = RequestReader.String(body, "lora_name") ?? throw OpenAiError.BadRequest("'lora_name' is required", "lora_name");
            string path = RequestReader.String(body, "lora_path") ?? throw OpenAiError.BadRequest("'lora_path' is required", "lora_path");
            if (name.Length == 0 || name == served.Name) throw OpenAiError.BadRequest($"'lora_name' must be non-empty and differ from the base model's name", "lora_name");
            string dir = adapters.AdapterDir!.Resolve(path)
                ?? throw new OpenAiError(403, $"'lora_path' must lie inside the server's --adapter-dir (no '..', no symbolic link out of it)", "lora_path", "forbidden_path");
            if (!File.Exists(Path.Combine(dir, "adapter_config.json")))
                throw OpenAiError.BadRequest($"'lora_path': {path}: no adapter_config.json there", "lora_path");
            if (!adapters.Register(name, dir)) throw OpenAiError.BadRequest($"The lora adapter '{name}' has already been loaded.", "lora_name");
            var (result, error) = await engine.Preload(name);
            if (result == EnsureResult.Failed)
            {
                adapters.Unregister(name);
                throw OpenAiError.BadRequest($"adapter `{name}` cannot be loaded: {error}", "lora_path");
            }
            await Text(context, $"Success: LoRA adapter '{name}' added successfully.");
        }
        catch (OpenAiError e)
        {
            await e.WriteAsync(context);
        }
    }

    /// <summary>vLLM's POST /v1/unload_lora_adapter {"lora_name"}; running requests that use it finish first.</summary>
    public async Task UnloadAdapter(HttpContext context)
    {
        try
        {
            RefuseUnlessAllowed();
            var body = await RequestReader.ReadObject(context);
            string name = RequestReader.String(body, "lora_name") ?? throw OpenAiError.BadRequest("'lora_name' is required", "lora_name");
            if (!adapters.Unregister(name)) throw new OpenAiError(404, $"The lora adapter '{name}' cannot be found.", "lora_name", "model_not_found");
            await Text(context, $"Success: LoRA adapter '{name}' removed successfully.");
        }
        catch (OpenAiError e)
        {
            await e.WriteAsync(context);
        }
    }

    void RefuseUnlessAllowed()
    {
        if (!options.AllowRuntimeAdapters)
            throw new OpenAiError(403, "runtime adapter loading is off; start the server with --allow-runtime-adapters and --adapter-dir", code: "forbidden");
    }

    static Task Text(HttpContext context, string text)
    {
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync(text);
    }

    public Task Health(HttpContext context)
    {
        if (engine.Draining)
        {
            context.Response.StatusCode = 503;
            return Text(context, "draining");
        }
        return Text(context, "ok");
    }

    public Task Metrics(HttpContext context)
    {
        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        return context.Response.WriteAsync(metrics.Render());
    }

    /// <summary>With --api-key, /v1/* answers 401 unless the request carries "Authorization: Bearer KEY".</summary>
    public async Task RequireKey(HttpContext context, RequestDelegate next)
    {
        if (options.ApiKey is string key && context.Request.Path.StartsWithSegments("/v1"))
        {
            string given = context.Request.Headers.Authorization.ToString();
            var expected = Encoding.UTF8.GetBytes("Bearer " + key);
            if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(given), expected))
            {
                metrics.Request("(unauthorized)", 401);
                await new OpenAiError(401, "Incorrect API key provided.", code: "invalid_api_key").WriteAsync(context);
                return;
            }
        }
        await next(context);
    }
}
