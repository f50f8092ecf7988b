using Microsoft.Extensions.Logging.Abstractions;
using PeftSharp.Models;
using PeftSharp.Server;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Engine;
using PeftSharp.Server.Metrics;

namespace PeftSharp.Tests.Server;

/// <summary>
/// The batching engine without HTTP, so what shares a batch is deterministic: requests queued before the engine
/// starts are decoded together, and with a small batch later ones join as earlier ones leave.
/// </summary>
public sealed class BatchEngineTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    sealed class Engine : IDisposable
    {
        public readonly CausalLM Model;
        public readonly BatchEngine Batch;
        public readonly ServerMetrics Metrics = new();

        public Engine(ServerFixture fixture, ServerOptions options)
        {
            Model = ModelLoader.Load(fixture.ModelDir);
            Model.eval();
            var backend = new PeftAdapterBackend(Model);
            var served = new ServedModel(Model, fixture.Tokenizer, backend, "tiny");
            var adapters = new AdapterManager(backend, options.MaxLoadedAdapters, new AdapterPaths(fixture.AdapterDir));
            Batch = new BatchEngine(served, adapters, options, Metrics, NullLogger<BatchEngine>.Instance);
        }

        public void Dispose()
        {
            Batch.StopAsync(CancellationToken.None).GetAwaiter().GetResult();
            Batch.Dispose();
            Model.Dispose();
        }
    }

    static async Task<(string Text, string? Finish, GenerationEvent Last)> Collect(GenerationRequest r)
    {
        var text = "";
        GenerationEvent last = null!;
        await foreach (var e in r.Events.ReadAllAsync())
        {
            if (e is TextDelta d) text += d.Text;
            last = e;
        }
        return (text, (last as Finished)?.Reason, last);
    }

    static GenerationRequest Greedy(ServerFixture f, string prompt, string? adapter, int max) =>
        new(f.Tokenizer.Encode(prompt), adapter, new SamplingParams(max, Temperature: 0), DateTime.UtcNow.AddMinutes(5));

    [Theory]
    [InlineData(16)] // everything in one batch
    [InlineData(2)]  // rows join as others leave
    public async Task AMixedBatchGivesEachRequestItsSingleResult(int maxBatch)
    {
        var jobs = new (string Prompt, string? Adapter, int Max)[]
        {
            ("Hello", "alpha", 9), ("the hello world, Romeo, Romeo", null, 15), ("O Romeo", "beta", 5), ("Deny thy father", "gamma", 12),
            ("Hello world", "beta", 20), ("wherefore art thou", "alpha", 7), ("the", null, 11),
        };
        var expected = jobs.Select(j => fixture.Generate(fixture.Tokenizer.Encode(j.Prompt), j.Adapter, j.Max)).ToList();
        using var engine = new Engine(fixture, new ServerOptions { MaxBatchSize = maxBatch });
        var requests = jobs.Select(j => Greedy(fixture, j.Prompt, j.Adapter, j.Max)).ToList();
        foreach (var r in requests) Assert.Equal(SubmitResult.Accepted, engine.Batch.Submit(r));
        await engine.Batch.StartAsync(CancellationToken.None);
        var results = await Task.WhenAll(requests.Select(Collect));
        for (int i = 0; i < jobs.Length; i++)
        {
            Assert.True(expected[i].Text == results[i].Text && expected[i].Finish == results[i].Finish,
                $"job {i}: expected {expected[i]}, got {results[i].Text} / {results[i].Finish} / {results[i].Last}");
        }
        string metrics = engine.Metrics.Render();
        var mean = double.Parse(metrics.Split('\n').First(l => l.StartsWith("peftsharp_mean_batch_size ")).Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(mean > 1.5, $"rows were batched: mean batch size {mean}");
    }

    [Fact]
    public async Task AFullQueueRefusesAndADrainFinishesWhatWasAccepted()
    {
        using var engine = new Engine(fixture, new ServerOptions { MaxQueue = 2, MaxBatchSize = 1 });
        var a = Greedy(fixture, "Hello", "alpha", 6);
        var b = Greedy(fixture, "O Romeo", null, 6);
        Assert.Equal(SubmitResult.Accepted, engine.Batch.Submit(a));
        Assert.Equal(SubmitResult.Accepted, engine.Batch.Submit(b));
        Assert.Equal(SubmitResult.QueueFull, engine.Batch.Submit(Greedy(fixture, "the", null, 2)));
        await engine.Batch.StartAsync(CancellationToken.None);
        var stop = engine.Batch.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        Assert.Equal(SubmitResult.Draining, engine.Batch.Submit(Greedy(fixture, "the", null, 2)));
        await stop;
        var ra = await Collect(a);
        var rb = await Collect(b);
        Assert.True(ra.Last is Finished, ra.Last.ToString());
        Assert.True(rb.Last is Finished, rb.Last.ToString());
    }

    [Fact]
    public async Task ACancelledRequestLeavesTheBatchAndOthersContinue()
    {
        using var engine = new Engine(fixture, new ServerOptions());
        var keep = Greedy(fixture, "Hello world", "beta", 30);
        var gone = Greedy(fixture, "O Romeo", "alpha", 30);
        gone.Cancel();
        engine.Batch.Submit(keep);
        engine.Batch.Submit(gone);
        await engine.Batch.StartAsync(CancellationToken.None);
        Assert.Equal(499, Assert.IsType<Failed>((await Collect(gone)).Last).Status);
        Assert.Equal(fixture.Generate(fixture.Tokenizer.Encode("Hello world"), "beta", 30).Text, (await Collect(keep)).Text);
    }
}
