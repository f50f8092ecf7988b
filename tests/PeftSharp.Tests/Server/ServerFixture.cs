using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Server;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Engine;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using PeftSharp.Tokenization;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Server;

/// <summary>
/// A tiny Qwen2-style model folder (byte-level BPE, ChatML template, &lt;|im_end|&gt; as end of turn) with three
/// LoRA adapters in an adapter folder, and helpers to run servers over it on a free loopback port.
/// </summary>
public sealed class ServerFixture : IDisposable
{
    public const int ImStart = 1003, ImEnd = 1004;
    public static readonly string[] AdapterNames = ["alpha", "beta", "gamma"];

    public string Root { get; } = TinyCheckpoints.NewTempDirectory("peftsharp-serve-");
    public string ModelDir => Path.Combine(Root, "model");
    public string AdapterDir => Path.Combine(Root, "adapters");
    public ModelTokenizer Tokenizer { get; }
    public NaiveLlamaConfig Config { get; } = new()
    {
        ModelType = "qwen2", VocabSize = 1005, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2,
        NumAttentionHeads = 2, NumKeyValueHeads = 1, MaxPositionEmbeddings = 96, TieWordEmbeddings = true,
    };

    public ServerFixture()
    {
        Directory.CreateDirectory(ModelDir);
        TinyCheckpoints.WriteLlama(ModelDir, Config, new TinyLlamaOptions { Seed = 35, InitStd = 0.3, EosTokenId = ImEnd });
        File.WriteAllText(Path.Combine(ModelDir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        string template = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Tokenization", "ChatTemplates", "qwen2.jinja"));
        File.WriteAllText(Path.Combine(ModelDir, "tokenizer_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["tokenizer_class"] = "GPT2Tokenizer",
            ["eos_token"] = "<|im_end|>",
            ["chat_template"] = template,
            ["added_tokens_decoder"] = new Dictionary<string, object>
            {
                ["1003"] = new { content = "<|im_start|>", special = true },
                ["1004"] = new { content = "<|im_end|>", special = true },
            },
        }));
        Tokenizer = ModelTokenizer.Load(ModelDir);
        for (int i = 0; i < AdapterNames.Length; i++)
        {
            using var model = ModelLoader.Load(ModelDir);
            var targets = i == 1 ? TargetModules.AllLinear : TargetModules.FromNames("q_proj", "v_proj", "up_proj");
            var lora = LoraModel.Create(model, new LoraConfig { R = 4 + 2 * i, LoraAlpha = 16, TargetModules = targets, InitLoraWeights = InitLoraWeights.False }, seed: 70 + i);
            AdapterFiles.Save(lora, Path.Combine(AdapterDir, AdapterNames[i]));
        }
    }

    public string AdapterPath(string name) => Path.Combine(AdapterDir, name);

    /// <summary>Starts a server on 127.0.0.1 and a free port; dispose the result to stop it.</summary>
    public RunningServer Start(ServerOptions? options = null)
    {
        var model = ModelLoader.Load(ModelDir);
        model.eval();
        var served = new ServedModel(model, Tokenizer, new PeftAdapterBackend(model), "tiny");
        var app = ServerHost.Build(served, (options ?? new ServerOptions()) with { Host = "127.0.0.1", Port = 0 });
        app.StartAsync().GetAwaiter().GetResult();
        return new RunningServer(app, model);
    }

    /// <summary>
    /// What `generate` alone gives: greedy tokens from <see cref="TextGenerator"/> on a freshly loaded model with the
    /// adapter made active the ordinary way (not the per-row path the server uses).
    /// </summary>
    public (string Text, int Tokens, string Finish) Generate(IReadOnlyList<int> promptIds, string? adapter, int maxTokens)
    {
        using var model = ModelLoader.Load(ModelDir);
        if (adapter is not null) AdapterFiles.Load(model, AdapterPath(adapter));
        model.eval();
        var ids = new TextGenerator(model, Tokenizer).Generate(promptIds, new GenerationOptions(maxTokens, 0.0));
        bool stoppedEarly = ids.Count < maxTokens && promptIds.Count + ids.Count < Config.MaxPositionEmbeddings;
        return (Tokenizer.Decode(ids, skipSpecialTokens: true), ids.Count, stoppedEarly ? "stop" : "length");
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}

public sealed class RunningServer(WebApplication app, CausalLM model) : IDisposable
{
    public WebApplication App { get; } = app;
    public HttpClient Client { get; } = new() { BaseAddress = new Uri(app.Urls.First()), Timeout = TimeSpan.FromSeconds(60) };

    public async Task<(int Status, JsonElement Json)> PostJson(string path, object body, string? key = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json") };
        if (key is not null) request.Headers.Authorization = new("Bearer", key);
        using var response = await Client.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.StartsWith('{') ? JsonDocument.Parse(text).RootElement.Clone() : JsonDocument.Parse(JsonSerializer.Serialize(text)).RootElement.Clone());
    }

    /// <summary>The data: payloads of a streamed answer, [DONE] included.</summary>
    public async Task<List<string>> PostStream(string path, object body)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json") };
        using var response = await Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = new List<string>();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        for (int i = 0; i < 10_000 && await reader.ReadLineAsync() is string line; i++)
        {
            if (line.Length == 0) continue;
            Assert.StartsWith("data: ", line);
            events.Add(line["data: ".Length..]);
        }
        return events;
    }

    public void Dispose()
    {
        Client.Dispose();
        App.StopAsync().GetAwaiter().GetResult();
        ((IDisposable)App).Dispose();
        model.Dispose();
    }
}
