using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Server;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Engine;
using PeftSharp.Server.Metrics;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.IA3;
using PeftSharp.Tuners.Prompts;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Server;

/// <summary>
/// The tiny served model of <see cref="ServerFixture"/> plus adapters of the other methods PeftSharp reads, written by
/// PeftModel with their weights randomised so each clearly changes the output: (IA)³, two LLM-Adapters bottleneck
/// adapters (a format that holds one per model), prompt tuning and prefix tuning.
/// </summary>
public sealed class AdapterTypesFixture : IDisposable
{
    public static readonly string[] TypedAdapters = ["ia3", "bottleneck", "bottleneck2", "prompt", "prefix"];

    public ServerFixture Server { get; } = new();

    public AdapterTypesFixture()
    {
        for (int i = 0; i < TypedAdapters.Length; i++)
        {
            using var model = ModelLoader.Load(Server.ModelDir);
            var peft = new PeftModel(model);
            PeftConfig config = TypedAdapters[i] switch
            {
                "ia3" => new IA3Config { TargetModules = TargetModules.FromNames("k_proj", "v_proj", "down_proj"), FeedforwardModules = TargetModules.FromNames("down_proj") },
                "bottleneck" => new BottleneckConfig { BottleneckSize = 4 },
                "bottleneck2" => new BottleneckConfig { BottleneckSize = 3, UseParallelAdapter = true },
                "prompt" => new PromptTuningConfig { NumVirtualTokens = 4 },
                _ => new PrefixTuningConfig { NumVirtualTokens = 3 },
            };
            peft.AddAdapter("default", config, seed: 40 + i);
            using (no_grad())
            {
                var gen = new TorchSharp.torch.Generator(90UL + (ulong)i);
                foreach (var (_, p, _) in peft.Tuners.SelectMany(t => t.AdapterParameters()))
                {
                    var noise = randn(p.shape, p.dtype, generator: gen).mul_(0.6);
                    if (TypedAdapters[i] == "ia3") noise.add_(1.0);
                    p.copy_(noise);
                }
            }
            peft.Save(Server.AdapterPath(TypedAdapters[i]));
        }
    }

    /// <summary>What the library's generate gives with this adapter loaded the ordinary way (PeftModel, adapter active).</summary>
    public string Generate(IReadOnlyList<int> promptIds, string? adapter, int maxTokens)
    {
        if (adapter is null || ServerFixture.AdapterNames.Contains(adapter)) return Server.Generate(promptIds, adapter, maxTokens).Text;
        using var model = ModelLoader.Load(Server.ModelDir);
        PeftModel.Load(model, [Server.AdapterPath(adapter)]);
        model.eval();
        var ids = new TextGenerator(model, Server.Tokenizer).Generate(promptIds, new GenerationOptions(maxTokens, 0.0));
        return Server.Tokenizer.Decode(ids, skipSpecialTokens: true);
    }

    public void Dispose() => Server.Dispose();
}

/// <summary>
/// Serving adapters of every type: over HTTP each gives what generate gives, alone and in mixed batches with adapters
/// of other types; runtime loads, --adapter-dir look-ups and LRU eviction work for them; and new requests that arrive
/// together are prefilled in shared forwards without changing any result.
/// </summary>
public sealed class AdapterTypesServingTests(AdapterTypesFixture fixture) : IClassFixture<AdapterTypesFixture>
{
    ServerFixture F => fixture.Server;

    static string Text(JsonElement completion) => completion.GetProperty("choices")[0].GetProperty("text").GetString()!;

    static readonly (string Model, string Prompt, int Max)[] Jobs =
    [
        ("ia3", "Hello", 10), ("bottleneck", "the hello world, Romeo", 12), ("prompt", "O Romeo", 9), ("prefix", "Deny thy father", 11),
        ("alpha", "Hello world", 8), ("tiny", "wherefore art thou", 7), ("prefix", "Hello", 6), ("ia3", "O Romeo, Romeo", 13),
        ("prompt", "the", 10), ("bottleneck", "Hello", 5),
    ];

    string Expected((string Model, string Prompt, int Max) j) => fixture.Generate(F.Tokenizer.Encode(j.Prompt), j.Model == "tiny" ? null : j.Model, j.Max);

    [Fact]
    public async Task EachAdapterTypeGivesGenerateAloneAndInAMixedBatch()
    {
        var expected = Jobs.Select(Expected).ToList();
        // Each adapter changes the output of the base model (else the comparison proves nothing).
        foreach (var name in AdapterTypesFixture.TypedAdapters.Where(n => n != "bottleneck2"))
            Assert.NotEqual(fixture.Generate(F.Tokenizer.Encode("Hello world"), null, 10), fixture.Generate(F.Tokenizer.Encode("Hello world"), name, 10));
        using var server = F.Start(new ServerOptions
        {
            Adapters = [("alpha", F.AdapterPath("alpha")), ("ia3", F.AdapterPath("ia3")), ("bottleneck", F.AdapterPath("bottleneck"))],
            AdapterDir = F.AdapterDir, // "prompt" and "prefix" are found there when first named
        });
        for (int i = 0; i < 4; i++)
        {
            var (status, json) = await server.PostJson("/v1/completions", new { model = Jobs[i].Model, prompt = Jobs[i].Prompt, max_tokens = Jobs[i].Max, temperature = 0 });
            Assert.Equal(200, status);
            Assert.Equal(expected[i], Text(json));
        }
        var results = await Task.WhenAll(Jobs.Select(j => server.PostJson("/v1/completions", new { model = j.Model, prompt = j.Prompt, max_tokens = j.Max, temperature = 0 })));
        for (int i = 0; i < Jobs.Length; i++)
        {
            Assert.Equal(200, results[i].Status);
            Assert.True(expected[i] == Text(results[i].Json), $"job {i} ({Jobs[i].Model}): expected \"{expected[i]}\", got \"{Text(results[i].Json)}\"");
        }
    }

    [Fact]
    public async Task RuntimeLoadsAndEvictionWorkForEveryType()
    {
        using var server = F.Start(new ServerOptions { AdapterDir = F.AdapterDir, AllowRuntimeAdapters = true, MaxLoadedAdapters = 2 });
        foreach (var name in new[] { "ia3", "prefix", "bottleneck" })
            Assert.Equal(200, (await server.PostJson("/v1/load_lora_adapter", new { lora_name = "rt-" + name, lora_path = F.AdapterPath(name) })).Status);
        // Round robin over more adapters than slots: each request loads its adapter, evicting the least recently used.
        foreach (var (model, name) in new[] { ("rt-ia3", "ia3"), ("rt-prefix", "prefix"), ("rt-bottleneck", "bottleneck"), ("bottleneck2", "bottleneck2"), ("rt-ia3", "ia3"), ("prompt", "prompt") })
        {
            var (status, json) = await server.PostJson("/v1/completions", new { model, prompt = "Hello world", max_tokens = 8, temperature = 0 });
            Assert.Equal(200, status);
            Assert.Equal(fixture.Generate(F.Tokenizer.Encode("Hello world"), name, 8), Text(json));
        }
        string metrics = await server.Client.GetStringAsync("/metrics");
        long evictions = long.Parse(metrics.Split('\n').First(l => l.StartsWith("peftsharp_adapter_evictions_total ")).Split(' ')[1]);
        Assert.True(evictions >= 3, metrics);
    }

    [Fact]
    public async Task VirtualTokensAndPrefixesTakeContextPositions()
    {
        // The tiny model's context is 96 positions; "prompt" puts 4 virtual tokens in front, "prefix" 3 key/value positions.
        var many = F.Tokenizer.Encode(string.Join(" ", Enumerable.Repeat("Romeo", 120)));
        var ids93 = many.Take(93).ToArray();
        var ids90 = many.Take(90).ToArray();
        using var server = F.Start(new ServerOptions { AdapterDir = F.AdapterDir });
        Assert.Equal(200, (await server.PostJson("/v1/completions", new { model = "tiny", prompt = ids93, max_tokens = 1, temperature = 0 })).Status);
        foreach (var name in new[] { "prompt", "prefix" })
        {
            var (status, json) = await server.PostJson("/v1/completions", new { model = name, prompt = ids93, max_tokens = 5, temperature = 0 });
            Assert.Equal(400, status);
            Assert.Equal("context_length_exceeded", json.GetProperty("error").GetProperty("code").GetString());
        }
        // 90 + 4 virtual positions leave room for 2 tokens: the server stops where generate stops, with "length".
        var (ok, completion) = await server.PostJson("/v1/completions", new { model = "prompt", prompt = ids90, max_tokens = 10, temperature = 0 });
        Assert.Equal(200, ok);
        Assert.Equal(fixture.Generate(ids90, "prompt", 10), Text(completion));
        Assert.Equal("length", completion.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(2, completion.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Theory]
    [InlineData(16)] // every request starts together: one padded prefill per kind, one mixed batch
    [InlineData(3)]  // rows join as others leave
    public async Task QueuedRequestsPrefillTogetherAndGiveTheirSingleResults(int maxBatch)
    {
        (string Model, string Prompt, int Max)[] jobs = [.. Jobs, ("beta", "O Romeo", 9), ("tiny", "Hello", 6), ("alpha", "the hello world", 12), ("bottleneck2", "Hello world", 8)];
        var expected = jobs.Select(Expected).ToList();
        using var model = ModelLoader.Load(F.ModelDir);
        model.eval();
        var backend = new PeftAdapterBackend(model);
        var options = new ServerOptions { MaxBatchSize = maxBatch };
        var metrics = new ServerMetrics();
        var engine = new BatchEngine(new ServedModel(model, F.Tokenizer, backend, "tiny"), new AdapterManager(backend, 8, new AdapterPaths(F.AdapterDir)), options, metrics, NullLogger<BatchEngine>.Instance);
        try
        {
            var requests = jobs.Select(j => new GenerationRequest(F.Tokenizer.Encode(j.Prompt), j.Model == "tiny" ? null : j.Model, new SamplingParams(j.Max, Temperature: 0), DateTime.UtcNow.AddMinutes(5))).ToList();
            foreach (var r in requests) Assert.Equal(SubmitResult.Accepted, engine.Submit(r));
            await engine.StartAsync(CancellationToken.None);
            for (int i = 0; i < jobs.Length; i++)
            {
                string text = "";
                GenerationEvent? last = null;
                await foreach (var e in requests[i].Events.ReadAllAsync()) { if (e is TextDelta d) text += d.Text; last = e; }
                Assert.True(expected[i] == text, $"job {i} ({jobs[i].Model}): expected \"{expected[i]}\", got \"{text}\" ({last})");
            }
            string rendered = metrics.Render();
            double Gauge(string name) => double.Parse(rendered.Split('\n').First(l => l.StartsWith(name + " ")).Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
            if (maxBatch == 16)
            {
                Assert.True(Gauge("peftsharp_mean_prefill_batch_size") > 1.5, rendered);
                Assert.True(Gauge("peftsharp_mean_batch_size") > 1.5, rendered);
            }
        }
        finally
        {
            await engine.StopAsync(CancellationToken.None);
            engine.Dispose();
        }
    }
}
