using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using PeftSharp.Jinja;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Engine;
using PeftSharp.Server.Metrics;

namespace PeftSharp.Server.Http;

/// <summary>
/// POST /v1/completions and /v1/chat/completions: parse and check the request, hand it to the engine, and answer
/// with one JSON object or, with <c>stream: true</c>, server-sent events ending in <c>data: [DONE]</c>. The streamed
/// pieces and the whole answer come from the same deltas, so they concatenate to the same text.
/// </summary>
sealed class GenerationEndpoints(ServedModel served, AdapterManager adapters, BatchEngine engine, ServerOptions options, ServerMetrics metrics)
{
    const int MaxLogprobs = 20;

    public Task Completions(HttpContext context) => Handle(context, chat: false);

    public Task ChatCompletions(HttpContext context) => Handle(context, chat: true);

    sealed record Parsed(string Model, GenerationRequest Request, bool Stream, bool IncludeUsage, bool ChatLogprobs);

    async Task Handle(HttpContext context, bool chat)
    {
        string model = served.Name;
        try
        {
            var body = await RequestReader.ReadObject(context);
            model = RequestReader.String(body, "model") ?? served.Name;
            var parsed = Parse(body, model, chat);
            switch (engine.Submit(parsed.Request))
            {
                case SubmitResult.QueueFull:
                    throw new OpenAiError(429, $"the server's queue is full ({options.MaxQueue} requests waiting); retry later", code: "queue_full");
                case SubmitResult.Draining:
                    throw new OpenAiError(503, "the server is shutting down", code: "shutting_down");
            }
            using var cancel = context.RequestAborted.Register(parsed.Request.Cancel);
            if (parsed.Stream) await Stream(context, parsed, chat);
            else await Whole(context, parsed, chat);
            metrics.Request(model, 200);
        }
        catch (OpenAiError e)
        {
            metrics.Request(model, e.Status);
            if (!context.Response.HasStarted) await e.WriteAsync(context);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            metrics.Request(model, 499); // the client went away
        }
    }

    Parsed Parse(JsonElement body, string model, bool chat)
    {
        string? adapter = model == served.Name ? null
            : adapters.Resolve(model) ? model
            : throw OpenAiError.ModelNotFound(model);
        foreach (var one in new[] { "n", "best_of" })
            if (RequestReader.Integer(body, one, long.MinValue, long.MaxValue) is long k && k != 1)
                throw OpenAiError.BadRequest($"'{one}' must be 1 (one completion per request)", one);
        if (RequestReader.Bool(body, "echo", false)) throw OpenAiError.BadRequest("'echo' is not supported", "echo");
        if (RequestReader.String(body, "suffix") is not null) throw OpenAiError.BadRequest("'suffix' is not supported", "suffix");
        foreach (var penalty in new[] { "presence_penalty", "frequency_penalty" })
            if (RequestReader.Number(body, penalty, 0, -2, 2) != 0) throw OpenAiError.BadRequest($"'{penalty}' is not supported (only 0)", penalty);
        if (body.TryGetProperty("tools", out var tools) && tools.ValueKind == JsonValueKind.Array && tools.GetArrayLength() > 0)
            throw OpenAiError.BadRequest("'tools' is not supported", "tools");

        var prompt = chat ? ChatPrompt(body) : CompletionPrompt(body);
        if (prompt.Count == 0) throw OpenAiError.BadRequest("the prompt encodes to no tokens", chat ? "messages" : "prompt");
        int maxPrompt = Math.Min(options.MaxPromptTokens ?? int.MaxValue, served.ContextLength - 1);
        if (prompt.Count > maxPrompt)
            throw new OpenAiError(400, $"This model's maximum prompt length is {maxPrompt} tokens; the prompt has {prompt.Count} tokens.",
                chat ? "messages" : "prompt", "context_length_exceeded");

        long? maxTokens = RequestReader.Integer(body, chat ? "max_completion_tokens" : "max_tokens", 1, options.MaxTokensLimit)
                          ?? (chat ? RequestReader.Integer(body, "max_tokens", 1, options.MaxTokensLimit) : null);
        int room = served.ContextLength - prompt.Count;
        int max = (int)Math.Min(maxTokens ?? (chat ? options.MaxTokensLimit : 16), room);
        double temperature = RequestReader.Number(body, "temperature", 1.0, 0, 2);
        double topP = RequestReader.Number(body, "top_p", 1.0, 0, 1);
        if (topP <= 0) throw OpenAiError.BadRequest("'top_p' must be greater than 0", "top_p");
        int seed = (int)(RequestReader.Integer(body, "seed", long.MinValue, long.MaxValue) is long s ? s % int.MaxValue : Random.Shared.Next());
        int? logprobs;
        bool chatLogprobs = false;
        if (chat)
        {
            chatLogprobs = RequestReader.Bool(body, "logprobs", false);
            long? top = RequestReader.Integer(body, "top_logprobs", 0, MaxLogprobs);
            if (top is not null && !chatLogprobs) throw OpenAiError.BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs");
            logprobs = chatLogprobs ? (int)(top ?? 0) : null;
        }
        else logprobs = (int?)RequestReader.Integer(body, "logprobs", 0, MaxLogprobs);
        var sampling = new SamplingParams(max, temperature, topP, seed, RequestReader.Stop(body), logprobs, RequestReader.Bool(body, "ignore_eos", false));

        bool stream = RequestReader.Bool(body, "stream", false);
        bool includeUsage = false;
        if (body.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object)
        {
            if (!stream) throw OpenAiError.BadRequest("'stream_options' needs 'stream': true", "stream_options");
            includeUsage = RequestReader.Bool(so, "include_usage", false);
        }
        var request = new GenerationRequest(prompt, adapter, sampling, DateTime.UtcNow + options.RequestTimeout);
        return new Parsed(model, request, stream, includeUsage, chatLogprobs);
    }

    IReadOnlyList<int> CompletionPrompt(JsonElement body)
    {
        if (!body.TryGetProperty("prompt", out var p) || p.ValueKind == JsonValueKind.Null)
            throw OpenAiError.BadRequest("'prompt' is required", "prompt");
        // A string, a list with one string, a list of token ids, or a list with one list of token ids.
        if (p.ValueKind == JsonValueKind.Array && p.GetArrayLength() == 1 && p[0].ValueKind is JsonValueKind.String or JsonValueKind.Array) p = p[0];
        if (p.ValueKind == JsonValueKind.String) return served.Encode(p.GetString()!, addSpecialTokens: true);
        if (p.ValueKind == JsonValueKind.Array && p.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number))
        {
            var ids = new List<int>();
            int vocab = served.Model.Config.VocabSize;
            foreach (var e in p.EnumerateArray())
            {
                if (!e.TryGetInt32(out int id) || id < 0 || id >= vocab)
                    throw OpenAiError.BadRequest($"'prompt': token ids must be integers in 0..{vocab - 1}", "prompt");
                ids.Add(id);
            }
            return ids;
        }
        if (p.ValueKind == JsonValueKind.Array)
            throw OpenAiError.BadRequest("'prompt': one prompt per request (a string or a list of token ids)", "prompt");
        throw OpenAiError.BadRequest("'prompt' must be a string or a list of token ids", "prompt");
    }

    IReadOnlyList<int> ChatPrompt(JsonElement body)
    {
        if (!body.TryGetProperty("messages", out var m) || m.ValueKind != JsonValueKind.Array || m.GetArrayLength() == 0)
            throw OpenAiError.BadRequest("'messages' must be a non-empty list", "messages");
        if (served.ChatTemplate is null)
            throw OpenAiError.BadRequest($"model `{served.Name}` has no chat template (chat_template.jinja, or chat_template in tokenizer_config.json); use /v1/completions", "messages");
        var messages = new List<object?>();
        int i = 0;
        foreach (var message in m.EnumerateArray())
        {
            if (message.ValueKind != JsonValueKind.Object) throw OpenAiError.BadRequest($"'messages[{i}]' must be an object", "messages");
            string? role = RequestReader.String(message, "role");
            if (role is not ("system" or "user" or "assistant" or "tool" or "developer"))
                throw OpenAiError.BadRequest($"'messages[{i}].role' must be system, developer, user, assistant or tool", "messages");
            var fields = new List<(string, object?)>();
            foreach (var property in message.EnumerateObject())
                fields.Add((property.Name, property.Name == "content" ? Content(property.Value, i) : JinjaValues.FromJson(property.Value)));
            messages.Add(JinjaValues.ToDict(fields));
            i++;
        }
        string text;
        try
        {
            text = served.RenderChat(messages);
        }
        catch (JinjaRaisedException e)
        {
            throw OpenAiError.BadRequest($"the chat template rejects the conversation: {e.TemplateMessage}", "messages");
        }
        catch (JinjaException e)
        {
            throw OpenAiError.BadRequest($"the chat template failed: {e.Message}", "messages");
        }
        // The rendered conversation holds its own special tokens (BOS, role headers).
        return served.Encode(text, addSpecialTokens: false);
    }

    /// <summary>Message content: a string, or a list of {"type": "text", "text"} parts joined (as vLLM gives templates).</summary>
    static object? Content(JsonElement content, int index)
    {
        if (content.ValueKind is JsonValueKind.String or JsonValueKind.Null) return content.ValueKind == JsonValueKind.Null ? null : content.GetString();
        if (content.ValueKind != JsonValueKind.Array)
            throw OpenAiError.BadRequest($"'messages[{index}].content' must be a string or a list of text parts", "messages");
        var sb = new StringBuilder();
        foreach (var part in content.EnumerateArray())
        {
            if (part.ValueKind != JsonValueKind.Object || RequestReader.String(part, "type") != "text" || RequestReader.String(part, "text") is not string t)
                throw OpenAiError.BadRequest($"'messages[{index}].content': only text parts are supported", "messages");
            if (sb.Length > 0) sb.Append('\n');
            sb.Append(t);
        }
        return sb.ToString();
    }

    async Task Whole(HttpContext context, Parsed p, bool chat)
    {
        var text = new StringBuilder();
        var logprobs = new List<TokenLogprob>();
        Finished? finished = null;
        await foreach (var e in p.Request.Events.ReadAllAsync(context.RequestAborted))
        {
            switch (e)
            {
                case TextDelta d: text.Append(d.Text); if (d.Logprobs is not null) logprobs.AddRange(d.Logprobs); break;
                case Finished f: finished = f; break;
                case Failed f: throw new OpenAiError(f.Status, f.Message, code: f.Code, type: f.Type);
            }
        }
        if (finished is null) throw new OpenAiError(500, "generation ended without a result");
        string id = NewId(chat);
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var usage = Usage(finished);
        object response = chat
            ? new
            {
                id, @object = "chat.completion", created, model = p.Model,
                choices = new[] { new { index = 0, message = new { role = "assistant", content = text.ToString() },
                                        logprobs = p.ChatLogprobs ? ChatLogprobs(logprobs) : null, finish_reason = finished.Reason } },
                usage,
            }
            : new
            {
                id, @object = "text_completion", created, model = p.Model,
                choices = new[] { new { index = 0, text = text.ToString(),
                                        logprobs = p.Request.Sampling.Logprobs is null ? null : CompletionLogprobs(logprobs, 0), finish_reason = finished.Reason } },
                usage,
            };
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(Json.Serialize(response), context.RequestAborted);
    }

    async Task Stream(HttpContext context, Parsed p, bool chat)
    {
        string id = NewId(chat);
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string kind = chat ? "chat.completion.chunk" : "text_completion";
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        context.Response.Headers["X-Accel-Buffering"] = "no";
        var aborted = context.RequestAborted;

        async Task Send(object chunk)
        {
            await context.Response.WriteAsync("data: " + Json.Serialize(chunk) + "\n\n", aborted);
            await context.Response.Body.FlushAsync(aborted);
        }

        object Chunk(object delta, string? finish, object? logprobs) => chat
            ? new { id, @object = kind, created, model = p.Model, choices = new[] { new { index = 0, delta, logprobs, finish_reason = finish } } }
            : new { id, @object = kind, created, model = p.Model, choices = new[] { new { index = 0, text = (string)delta, logprobs, finish_reason = finish } } };

        int offset = 0;
        if (chat) await Send(Chunk(new { role = "assistant", content = "" }, null, null));
        await foreach (var e in p.Request.Events.ReadAllAsync(aborted))
        {
            switch (e)
            {
                case TextDelta d:
                    object? lp = d.Logprobs is null ? null : chat ? ChatLogprobs(d.Logprobs) : CompletionLogprobs(d.Logprobs, offset);
                    offset += d.Text.Length;
                    await Send(Chunk(chat ? new { content = d.Text } : d.Text, null, lp));
                    break;
                case Finished f:
                    await Send(Chunk(chat ? new { } : "", f.Reason, null));
                    if (p.IncludeUsage) await Send(new { id, @object = kind, created, model = p.Model, choices = Array.Empty<object>(), usage = Usage(f) });
                    break;
                case Failed f:
                    await Send(new OpenAiError(f.Status, f.Message, code: f.Code, type: f.Type).Body);
                    metrics.Request(p.Model, f.Status);
                    break;
            }
        }
        await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
        await context.Response.Body.FlushAsync(aborted);
    }

    static object Usage(Finished f) => new { prompt_tokens = f.PromptTokens, completion_tokens = f.CompletionTokens, total_tokens = f.PromptTokens + f.CompletionTokens };

    static string NewId(bool chat) => (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");

    /// <summary>The legacy completions shape: tokens, token_logprobs, top_logprobs (token → logprob), text_offset.</summary>
    static object CompletionLogprobs(IReadOnlyList<TokenLogprob> items, int startOffset)
    {
        var offsets = new List<int>();
        int offset = startOffset;
        foreach (var t in items) { offsets.Add(offset); offset += t.Token.Length; }
        return new
        {
            tokens = items.Select(t => t.Token).ToList(),
            token_logprobs = items.Select(t => t.Logprob).ToList(),
            top_logprobs = items.Select(t => t.Top.GroupBy(x => x.Token).ToDictionary(g => g.Key, g => g.First().Logprob)).ToList(),
            text_offset = offsets,
        };
    }

    /// <summary>The chat shape: content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}].</summary>
    static object ChatLogprobs(IReadOnlyList<TokenLogprob> items) => new
    {
        content = items.Select(t => new
        {
            token = t.Token, logprob = t.Logprob, bytes = Encoding.UTF8.GetBytes(t.Token).Select(b => (int)b).ToList(),
            top_logprobs = t.Top.Select(x => new { token = x.Token, logprob = x.Logprob, bytes = Encoding.UTF8.GetBytes(x.Token).Select(b => (int)b).ToList() }).ToList(),
        }).ToList(),
    };
}
