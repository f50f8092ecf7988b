using System.Text;
using System.Text.Json;
using PeftSharp.Server;

namespace PeftSharp.Tests.Server;

/// <summary>
/// `peftsharp serve` over HTTP on a loopback port: the OpenAI endpoints, streaming, the chat template, per-request
/// adapters, runtime load/unload with its confinement, LRU eviction, errors and auth. Expected texts come from
/// <see cref="PeftSharp.Inference.TextGenerator"/> run alone with the adapter made active the ordinary way.
/// </summary>
public sealed class ServerEndpointTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    const string Prompt = "Hello world, the hello";

    RunningServer StartDefault(int maxLoaded = 8) => fixture.Start(new ServerOptions
    {
        Adapters = [("alpha", fixture.AdapterPath("alpha")), ("beta", fixture.AdapterPath("beta"))],
        AdapterDir = fixture.AdapterDir,
        AllowRuntimeAdapters = true,
        MaxLoadedAdapters = maxLoaded,
    });

    static string Text(JsonElement completion) => completion.GetProperty("choices")[0].GetProperty("text").GetString()!;

    [Fact]
    public async Task ModelsListTheBaseAndEveryAdapter()
    {
        using var server = StartDefault();
        var json = JsonDocument.Parse(await server.Client.GetStringAsync("/v1/models")).RootElement;
        Assert.Equal("list", json.GetProperty("object").GetString());
        var ids = json.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()).ToList();
        Assert.Equal(["tiny", "alpha", "beta"], ids);
        Assert.Equal("tiny", json.GetProperty("data")[1].GetProperty("parent").GetString());
    }

    [Fact]
    public async Task EachRequestsAdapterGivesWhatGenerateGivesWithThatAdapter()
    {
        using var server = StartDefault();
        var promptIds = fixture.Tokenizer.Encode(Prompt);
        var texts = new Dictionary<string, string>();
        foreach (var model in new[] { "tiny", "alpha", "beta" })
        {
            var expected = fixture.Generate(promptIds, model == "tiny" ? null : model, 12);
            var (status, json) = await server.PostJson("/v1/completions", new { model, prompt = Prompt, max_tokens = 12, temperature = 0 });
            Assert.Equal(200, status);
            Assert.Equal("text_completion", json.GetProperty("object").GetString());
            Assert.Equal(model, json.GetProperty("model").GetString());
            Assert.Equal(expected.Text, Text(json));
            Assert.Equal(expected.Finish, json.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
            var usage = json.GetProperty("usage");
            Assert.Equal(promptIds.Count, usage.GetProperty("prompt_tokens").GetInt32());
            Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + usage.GetProperty("completion_tokens").GetInt32(), usage.GetProperty("total_tokens").GetInt32());
            texts[model] = expected.Text;
        }
        // The adapters change the output, so the comparison above could fail.
        Assert.Equal(3, texts.Values.Distinct().Count());
    }

    [Fact]
    public async Task ConcurrentRequestsForMixedAdaptersGiveTheirSingleRequestResults()
    {
        using var server = StartDefault();
        var jobs = new[] { ("alpha", "Hello", 10), ("tiny", "the hello world, Romeo", 14), ("beta", "O Romeo", 8), ("alpha", "Deny thy father", 12),
                           ("beta", "Hello world", 16), ("tiny", "wherefore", 6) };
        var expected = jobs.Select(j => fixture.Generate(fixture.Tokenizer.Encode(j.Item2), j.Item1 == "tiny" ? null : j.Item1, j.Item3).Text).ToList();
        var results = await Task.WhenAll(jobs.Select(j => server.PostJson("/v1/completions", new { model = j.Item1, prompt = j.Item2, max_tokens = j.Item3, temperature = 0 })));
        for (int i = 0; i < jobs.Length; i++)
        {
            Assert.Equal(200, results[i].Status);
            Assert.Equal(expected[i], Text(results[i].Json));
        }
    }

    [Fact]
    public async Task StreamedChunksConcatenateToTheNonStreamedTextAndEndWithDone()
    {
        using var server = StartDefault();
        bool sawMultiByte = false;
        foreach (int seed in new[] { 1, 2, 3, 4 })
        {
            var body = new { model = seed % 2 == 0 ? "alpha" : "tiny", prompt = Prompt, max_tokens = 24, temperature = 1.5, seed };
            var (_, whole) = await server.PostJson("/v1/completions", body);
            var events = await server.PostStream("/v1/completions", new { body.model, body.prompt, body.max_tokens, body.temperature, body.seed, stream = true });
            Assert.Equal("[DONE]", events[^1]);
            var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
            Assert.All(chunks, c => Assert.Equal("text_completion", c.GetProperty("object").GetString()));
            string streamed = string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString()));
            Assert.Equal(Text(whole), streamed);
            Assert.Equal(whole.GetProperty("choices")[0].GetProperty("finish_reason").GetString(),
                         chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
            // A chunk never ends inside a UTF-8 character (the decoder's U+FFFD for a partial one is held back).
            Assert.All(chunks[..^2], c => Assert.False(c.GetProperty("choices")[0].GetProperty("text").GetString()!.EndsWith('\uFFFD')));
            sawMultiByte |= streamed.Any(ch => ch > 127 && ch != '\uFFFD');
        }
        Assert.True(sawMultiByte, "the sampled texts should include multi-byte characters built from byte tokens");
    }

    [Fact]
    public async Task ChatUsesTheModelsTemplateAndStreamsDeltas()
    {
        using var server = StartDefault();
        // ChatML as Qwen2's template writes it, by hand.
        const string rendered = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n";
        var ids = fixture.Tokenizer.Encode(rendered, addSpecialTokens: false);
        Assert.Equal(ServerFixture.ImStart, ids[0]);
        var expected = fixture.Generate(ids, "beta", 10);
        var messages = new object[] { new { role = "system", content = "Be brief." }, new { role = "user", content = new object[] { new { type = "text", text = "Hello world" } } } };
        var (status, json) = await server.PostJson("/v1/chat/completions", new { model = "beta", messages, max_tokens = 10, temperature = 0 });
        Assert.Equal(200, status);
        Assert.Equal("chat.completion", json.GetProperty("object").GetString());
        var message = json.GetProperty("choices")[0].GetProperty("message");
        Assert.Equal("assistant", message.GetProperty("role").GetString());
        Assert.Equal(expected.Text, message.GetProperty("content").GetString());
        Assert.Equal(ids.Count, json.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());

        var events = await server.PostStream("/v1/chat/completions", new { model = "beta", messages, max_tokens = 10, temperature = 0, stream = true, stream_options = new { include_usage = true } });
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        Assert.Equal("assistant", chunks[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        var content = chunks.Where(c => c.GetProperty("choices").GetArrayLength() > 0)
            .Select(c => c.GetProperty("choices")[0].GetProperty("delta"))
            .Select(d => d.TryGetProperty("content", out var t) ? t.GetString() : "");
        Assert.Equal(expected.Text, string.Concat(content));
        Assert.Equal(0, chunks[^1].GetProperty("choices").GetArrayLength());
        Assert.Equal(ids.Count, chunks[^1].GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }

    [Fact]
    public async Task StopStringsCutTheTextAndNeverReachTheClient()
    {
        using var server = StartDefault();
        // Sampled with a seed (the same tokens each time); a stop string of two ASCII characters from inside the text.
        string full = "", stop = "";
        int seed = 0;
        for (seed = 1; seed <= 20 && stop.Length == 0; seed++)
        {
            full = Text((await server.PostJson("/v1/completions", new { model = "tiny", prompt = Prompt, max_tokens = 30, temperature = 1.2, seed })).Json);
            for (int i = 1; i + 1 < full.Length && stop.Length == 0; i++)
                if (char.IsAsciiLetterOrDigit(full[i]) && char.IsAsciiLetterOrDigit(full[i + 1])) stop = full.Substring(i, 2);
        }
        seed--;
        Assert.NotEqual("", stop);
        string expected = full[..full.IndexOf(stop, StringComparison.Ordinal)];
        var body = new { model = "tiny", prompt = Prompt, max_tokens = 30, temperature = 1.2, seed, stop = new[] { stop, "never-there" } };
        var (_, json) = await server.PostJson("/v1/completions", body);
        Assert.Equal(expected, Text(json));
        Assert.Equal("stop", json.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        var events = await server.PostStream("/v1/completions", new { body.model, body.prompt, body.max_tokens, body.temperature, body.seed, body.stop, stream = true });
        Assert.Equal(expected, string.Concat(events[..^1].Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0].GetProperty("text").GetString())));
    }

    [Fact]
    public async Task LogprobsAreLogSoftmaxValuesOfTheChosenTokens()
    {
        using var server = StartDefault();
        var (status, json) = await server.PostJson("/v1/completions", new { model = "alpha", prompt = Prompt, max_tokens = 5, temperature = 0, logprobs = 3 });
        Assert.Equal(200, status);
        var lp = json.GetProperty("choices")[0].GetProperty("logprobs");
        var tokens = lp.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToList();
        var values = lp.GetProperty("token_logprobs").EnumerateArray().Select(v => v.GetDouble()).ToList();
        var tops = lp.GetProperty("top_logprobs").EnumerateArray().ToList();
        Assert.Equal(tokens.Count, values.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            Assert.True(values[i] <= 0);
            var top = tops[i].EnumerateObject().Select(p => p.Value.GetDouble()).ToList();
            Assert.InRange(top.Count, 1, 3);
            Assert.Equal(top.Max(), values[i], 6); // greedy: the chosen token is the most likely one
        }
    }

    [Fact]
    public async Task ErrorsHaveOpenAiShapesAndStatuses()
    {
        using var server = fixture.Start(new ServerOptions { MaxBodyBytes = 4096, MaxPromptTokens = 40, MaxTokensLimit = 50 });
        async Task<JsonElement> Expect(int status, HttpContent content, string path = "/v1/completions")
        {
            using var response = await server.Client.PostAsync(path, content);
            Assert.Equal(status, (int)response.StatusCode);
            string text = await response.Content.ReadAsStringAsync();
            Assert.DoesNotContain("   at ", text);
            var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
            Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
            Assert.True(error.TryGetProperty("type", out _) && error.TryGetProperty("param", out _) && error.TryGetProperty("code", out _));
            return error;
        }
        StringContent J(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");
        await Expect(400, new StringContent("{not json", Encoding.UTF8, "application/json"));
        Assert.Equal("prompt", (await Expect(400, J(new { model = "tiny" }))).GetProperty("param").GetString());
        Assert.Equal("model_not_found", (await Expect(404, J(new { model = "nope", prompt = "hi" }))).GetProperty("code").GetString());
        Assert.Equal("context_length_exceeded", (await Expect(400, J(new { model = "tiny", prompt = string.Join(" ", Enumerable.Repeat("Romeo", 60)) }))).GetProperty("code").GetString());
        await Expect(413, J(new { model = "tiny", prompt = new string('a', 5000) }));
        await Expect(400, J(new { model = "tiny", prompt = "hi", max_tokens = 51 }));
        await Expect(400, J(new { model = "tiny", prompt = "hi", n = 2 }));
        await Expect(400, J(new { model = "tiny", prompt = "hi", temperature = "hot" }));
        await Expect(400, J(new { model = "tiny", prompt = new[] { 5, 99999 } }));
        await Expect(400, J(new { model = "tiny", messages = Array.Empty<object>() }), "/v1/chat/completions");
        // Runtime loading is off on this server.
        await Expect(403, J(new { lora_name = "x", lora_path = fixture.AdapterPath("alpha") }), "/v1/load_lora_adapter");
        // The server still answers.
        var (status, _) = await server.PostJson("/v1/completions", new { model = "tiny", prompt = "hi", max_tokens = 2 });
        Assert.Equal(200, status);
    }

    [Fact]
    public async Task AnApiKeyIsRequiredOnV1WhenSet()
    {
        using var server = fixture.Start(new ServerOptions { ApiKey = "sk-test" });
        var (status, json) = await server.PostJson("/v1/completions", new { model = "tiny", prompt = "hi", max_tokens = 2 });
        Assert.Equal(401, status);
        Assert.Equal("invalid_api_key", json.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(401, (await server.PostJson("/v1/completions", new { model = "tiny", prompt = "hi" }, key: "sk-wrong")).Status);
        Assert.Equal(200, (await server.PostJson("/v1/completions", new { model = "tiny", prompt = "hi", max_tokens = 2 }, key: "sk-test")).Status);
        using var health = await server.Client.GetAsync("/health");
        Assert.Equal(200, (int)health.StatusCode); // probes need no key
    }

    [Fact]
    public async Task AdaptersLoadAndUnloadAtRunTimeInsideTheAdapterDirOnly()
    {
        using var server = StartDefault();
        var expected = fixture.Generate(fixture.Tokenizer.Encode(Prompt), "gamma", 8).Text;
        var (status, text) = await server.PostJson("/v1/load_lora_adapter", new { lora_name = "g", lora_path = fixture.AdapterPath("gamma") });
        Assert.Equal(200, status);
        Assert.Equal("Success: LoRA adapter 'g' added successfully.", text.GetString());
        Assert.Equal(400, (await server.PostJson("/v1/load_lora_adapter", new { lora_name = "g", lora_path = "gamma" })).Status);
        var (_, completion) = await server.PostJson("/v1/completions", new { model = "g", prompt = Prompt, max_tokens = 8, temperature = 0 });
        Assert.Equal(expected, Text(completion));
        Assert.Contains("\"g\"", await server.Client.GetStringAsync("/v1/models"));

        Assert.Equal(200, (await server.PostJson("/v1/unload_lora_adapter", new { lora_name = "g" })).Status);
        Assert.Equal(404, (await server.PostJson("/v1/completions", new { model = "g", prompt = Prompt })).Status);
        Assert.Equal(404, (await server.PostJson("/v1/unload_lora_adapter", new { lora_name = "g" })).Status);

        // Escapes are refused with 403: "..", an absolute path outside, a symbolic link out of the folder.
        string outside = Path.Combine(fixture.Root, "outside");
        if (!Directory.Exists(outside)) CopyDir(fixture.AdapterPath("gamma"), outside);
        string link = Path.Combine(fixture.AdapterDir, "sneaky");
        if (!Directory.Exists(link)) Directory.CreateSymbolicLink(link, outside);
        foreach (var path in new[] { "../outside", outside, "sneaky", Path.Combine(fixture.AdapterDir, "..", "outside") })
        {
            var (s, error) = await server.PostJson("/v1/load_lora_adapter", new { lora_name = "evil", lora_path = path });
            Assert.Equal(403, s);
            Assert.Equal("lora_path", error.GetProperty("error").GetProperty("param").GetString());
        }
        // A request naming a folder of --adapter-dir is served from it; a link out of it is not.
        Assert.Equal(200, (await server.PostJson("/v1/completions", new { model = "gamma", prompt = Prompt, max_tokens = 2 })).Status);
        Assert.Equal(404, (await server.PostJson("/v1/completions", new { model = "sneaky", prompt = Prompt, max_tokens = 2 })).Status);
    }

    [Fact]
    public async Task LeastRecentlyUsedAdaptersAreEvictedBeyondTheLimit()
    {
        using var server = StartDefault(maxLoaded: 2);
        var promptIds = fixture.Tokenizer.Encode(Prompt);
        var expected = ServerFixture.AdapterNames.ToDictionary(a => a, a => fixture.Generate(promptIds, a, 6).Text);
        foreach (var name in new[] { "alpha", "beta", "gamma", "alpha", "gamma", "beta", "alpha" })
        {
            var (status, json) = await server.PostJson("/v1/completions", new { model = name, prompt = Prompt, max_tokens = 6, temperature = 0 });
            Assert.Equal(200, status);
            Assert.Equal(expected[name], Text(json));
        }
        string metrics = await server.Client.GetStringAsync("/metrics");
        Assert.Contains("peftsharp_loaded_adapters 2\n", metrics);
        // alpha, beta loaded; gamma evicts alpha; alpha evicts beta; gamma hits; beta evicts alpha; alpha evicts gamma.
        Assert.Contains("peftsharp_adapter_evictions_total 4\n", metrics);
    }

    [Fact]
    public async Task HealthAndPrometheusMetrics()
    {
        using var server = StartDefault();
        Assert.Equal("ok", await server.Client.GetStringAsync("/health"));
        await server.PostJson("/v1/completions", new { model = "alpha", prompt = Prompt, max_tokens = 3, temperature = 0 });
        await server.PostJson("/v1/completions", new { model = "nope", prompt = Prompt });
        using var response = await server.Client.GetAsync("/metrics");
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        string text = await response.Content.ReadAsStringAsync();
        Assert.Contains("peftsharp_requests_total{model=\"alpha\",status=\"200\"} 1\n", text);
        Assert.Contains("peftsharp_requests_total{model=\"nope\",status=\"404\"} 1\n", text);
        Assert.Contains("peftsharp_generation_tokens_total{model=\"alpha\"} 3\n", text);
        Assert.Contains("peftsharp_time_to_first_token_seconds_count 1\n", text);
        Assert.Contains("# TYPE peftsharp_queue_length gauge", text);
        // Every sample line is "name{labels} value" with a number.
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith('#')))
            Assert.True(double.TryParse(line[(line.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture, out _), line);
    }

    static void CopyDir(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
