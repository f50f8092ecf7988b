using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Metrics;
using static TorchSharp.torch;

namespace PeftSharp.Server.Engine;

public enum SubmitResult { Accepted, QueueFull, Draining }

/// <summary>
/// Continuous batching on one thread that owns the model: requests wait in a bounded queue; between decode steps
/// finished rows leave and waiting requests join (each is prefilled alone, then its KV cache is appended to the
/// batch's, right-aligned), and every step runs one forward for all rows, each row with its own adapter. Greedy
/// results do not depend on what else is in the batch: each row keeps its own positions and masks the padding.
/// </summary>
public sealed class BatchEngine : IHostedService, IDisposable
{
    readonly ServedModel served;
    readonly AdapterManager adapters;
    readonly ServerOptions options;
    readonly ServerMetrics metrics;
    readonly ILogger logger;
    readonly Channel<GenerationRequest> queue;
    readonly ConcurrentQueue<Action> commands = new();
    readonly SemaphoreSlim wake = new(0);
    readonly TaskCompletionSource stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly List<Row> rows = [];
    readonly List<GenerationRequest> waiting = []; // need an adapter slot that running rows hold
    KvCache? cache;
    Thread? thread;
    volatile bool draining, stopRequested, abort;
    volatile int batchSize, waitingCount;

    public BatchEngine(ServedModel served, AdapterManager adapters, ServerOptions options, ServerMetrics metrics, ILogger<BatchEngine> logger)
    {
        this.served = served;
        this.adapters = adapters;
        this.options = options;
        this.metrics = metrics;
        this.logger = logger;
        queue = Channel.CreateBounded<GenerationRequest>(new BoundedChannelOptions(options.MaxQueue) { SingleReader = true });
        metrics.QueueLength = () => queue.Reader.Count + waitingCount;
        metrics.BatchSize = () => batchSize;
        metrics.LoadedAdapters = () => adapters.LoadedCount;
        metrics.Evictions = () => adapters.Evictions;
    }

    public bool Draining => draining;

    /// <summary>Stops accepting requests (SIGTERM); the running and queued ones still finish.</summary>
    public void BeginDrain() => draining = true;

    public SubmitResult Submit(GenerationRequest request)
    {
        if (draining) return SubmitResult.Draining;
        if (!queue.Writer.TryWrite(request)) return SubmitResult.QueueFull;
        wake.Release();
        return SubmitResult.Accepted;
    }

    /// <summary>Runs <paramref name="action"/> on the engine thread between two steps.</summary>
    public Task<T> Invoke<T>(Func<T> action)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        commands.Enqueue(() =>
        {
            try { done.SetResult(action()); }
            catch (Exception e) { done.SetException(e); }
        });
        wake.Release();
        return done.Task;
    }

    /// <summary>Loads an adapter into a slot now (evicting if needed); Busy when every slot is held by running rows.</summary>
    public Task<(EnsureResult Result, string? Error)> Preload(string name) => Invoke(() =>
    {
        var (result, _, error) = adapters.Ensure(name, InUseSlots());
        return (result, error);
    });

    public Task StartAsync(CancellationToken cancellationToken)
    {
        thread = new Thread(Loop) { Name = "peftsharp-engine", IsBackground = true };
        thread.Start();
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        draining = true;
        stopRequested = true;
        wake.Release();
        try
        {
            await stopped.Task.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            abort = true; // the drain timeout passed: fail what is left
            wake.Release();
            await stopped.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    void Loop()
    {
        using var noGrad = no_grad();
        try
        {
            while (true)
            {
                RunCommands();
                if (abort) { FailAll(503, "server_error", "the server is shutting down"); break; }
                try
                {
                    adapters.Collect(InUseSlots());
                    Admit();
                    if (rows.Count > 0) Step();
                }
                catch (Exception e)
                {
                    // A bug or an allocation failure: fail the running rows, keep serving.
                    logger.LogError(e, "decode step failed");
                    foreach (var r in rows) r.Fail(500, "server_error", "internal error while generating");
                    rows.Clear();
                    ResetCache();
                }
                batchSize = rows.Count;
                waitingCount = waiting.Count;
                if (rows.Count == 0)
                {
                    if (stopRequested && queue.Reader.Count == 0 && waiting.Count == 0) break;
                    wake.Wait(100);
                }
            }
        }
        finally
        {
            ResetCache();
            stopped.TrySetResult();
        }
    }

    void RunCommands()
    {
        while (commands.TryDequeue(out var command)) command();
    }

    HashSet<string> InUseSlots() => rows.Where(r => r.Slot is not null).Select(r => r.Slot!).ToHashSet(StringComparer.Ordinal);

    void FailAll(int status, string type, string message)
    {
        foreach (var r in rows) r.Fail(status, type, message);
        rows.Clear();
        foreach (var w in waiting) w.Emit(new Failed(status, type, message));
        waiting.Clear();
        while (queue.Reader.TryRead(out var q)) q.Emit(new Failed(status, type, message));
    }

    void Admit()
    {
        // Requests waiting for an adapter slot go first, in arrival order; then the queue.
        for (int i = 0; i < waiting.Count && rows.Count < options.MaxBatchSize; )
        {
            if (TryStart(waiting[i])) waiting.RemoveAt(i);
            else i++;
        }
        while (rows.Count < options.MaxBatchSize && waiting.Count < options.MaxQueue && queue.Reader.TryRead(out var request))
            if (!TryStart(request)) waiting.Add(request);
    }

    /// <summary>Starts the request (or ends it with an error); false when it must wait for an adapter slot.</summary>
    bool TryStart(GenerationRequest request)
    {
        if (request.Cancelled) { request.Emit(new Failed(499, "invalid_request_error", "client closed the request")); return true; }
        if (DateTime.UtcNow > request.Deadline)
        {
            request.Emit(new Failed(504, "server_error", $"the request waited longer than the server's request timeout ({options.RequestTimeout.TotalSeconds:0} s)"));
            return true;
        }
        string? slot = null;
        if (request.Adapter is string name)
        {
            var (result, s, error) = adapters.Ensure(name, InUseSlots());
            switch (result)
            {
                case EnsureResult.Busy: return false;
                case EnsureResult.NotFound:
                    request.Emit(new Failed(404, "invalid_request_error", $"The model `{name}` does not exist.", "model_not_found"));
                    return true;
                case EnsureResult.Failed:
                    request.Emit(new Failed(400, "invalid_request_error", $"adapter `{name}` cannot be loaded: {error}"));
                    return true;
            }
            slot = s;
        }
        Prefill(request, slot);
        return true;
    }

    void Prefill(GenerationRequest request, string? slot)
    {
        var model = served.Model;
        using var single = model.NewCache();
        float[] logits;
        using (var scope = NewDisposeScope())
        using (served.Adapters.UseRows([slot]))
        {
            var ids = tensor(request.PromptIds.Select(i => (long)i).ToArray(), device: model.Device).unsqueeze(0);
            var hidden = model.Hidden(ids, single);
            logits = model.Logits(hidden[0, -1]).to_type(ScalarType.Float32).cpu().data<float>().ToArray();
        }
        metrics.Prompt(request.PromptIds.Count);
        var row = new Row(request, slot, served);
        metrics.FirstToken(DateTime.UtcNow - request.Arrived);
        row.Accept(logits);
        metrics.Generated([request.Adapter ?? served.Name], 1);
        if (row.Done) { Complete(row); return; }
        cache ??= model.NewCache();
        cache.AppendRows(single);
        rows.Add(row);
    }

    void Step()
    {
        var model = served.Model;
        var c = cache!;
        int b = rows.Count;
        float[] all;
        long vocab;
        using (var scope = NewDisposeScope())
        using (served.Adapters.UseRows(rows.Select(r => r.Slot).ToList()))
        {
            var input = tensor(rows.Select(r => (long)r.LastToken).ToArray(), device: model.Device).view(b, 1);
            var mask = c.KeyMask(1, model.Device);
            var hidden = model.Hidden(input, c, mask);
            var logits = model.Logits(hidden.select(1, 0)).to_type(ScalarType.Float32).cpu();
            vocab = logits.shape[1];
            all = logits.data<float>().ToArray();
        }
        var now = DateTime.UtcNow;
        for (int i = 0; i < b; i++)
        {
            var row = rows[i];
            if (row.Request.Cancelled) { row.Fail(499, "invalid_request_error", "client closed the request"); continue; }
            if (now > row.Request.Deadline)
            {
                row.Fail(504, "server_error", $"the request took longer than the server's request timeout ({options.RequestTimeout.TotalSeconds:0} s)");
                continue;
            }
            row.Accept(all.AsSpan((int)(i * vocab), (int)vocab).ToArray());
        }
        metrics.Generated(rows.Where(r => !r.Failed).Select(r => r.Request.Adapter ?? served.Name), b);
        var keep = new List<int>();
        for (int i = 0; i < b; i++)
        {
            if (rows[i].Done) Complete(rows[i]);
            else keep.Add(i);
        }
        if (keep.Count == b) return;
        var remaining = keep.Select(i => rows[i]).ToList();
        rows.Clear();
        rows.AddRange(remaining);
        if (rows.Count == 0) ResetCache();
        else c.SelectRows(keep);
    }

    void Complete(Row row)
    {
        if (!row.Failed) metrics.Completed(DateTime.UtcNow - row.Request.Arrived);
    }

    void ResetCache()
    {
        cache?.Dispose();
        cache = null;
    }

    public void Dispose()
    {
        wake.Dispose();
        ResetCache();
    }

    /// <summary>One running request: its sampler, the text it has produced, and when it stops.</summary>
    sealed class Row(GenerationRequest request, string? slot, ServedModel served)
    {
        readonly Sampler sampler = new(request.Sampling.Temperature, request.Sampling.TopP, request.Sampling.Seed);
        readonly TextStream text = new(served.Decode, request.Sampling.Stop ?? []);
        readonly List<int> generated = [];
        List<TokenLogprob>? pendingLogprobs;
        int sampled;

        public GenerationRequest Request { get; } = request;
        public string? Slot { get; } = slot;
        public int LastToken => generated[^1];
        public bool Done { get; private set; }
        public bool Failed { get; private set; }

        public void Accept(float[] logits)
        {
            int token = sampler.Next(logits);
            sampled++;
            if (!Request.Sampling.IgnoreEos && served.StopTokens.Contains(token)) { Finish("stop", flush: true); return; }
            if (Request.Sampling.Logprobs is int k) (pendingLogprobs ??= []).Add(Logprob(logits, token, k));
            generated.Add(token);
            var (delta, stoppedByString) = text.Push(token);
            if (delta.Length > 0) EmitDelta(delta);
            if (stoppedByString) Finish("stop", flush: false);
            else if (generated.Count >= Request.Sampling.MaxTokens || Request.PromptIds.Count + generated.Count >= served.ContextLength)
                Finish("length", flush: true);
        }

        void EmitDelta(string delta)
        {
            Request.Emit(new TextDelta(delta, pendingLogprobs));
            pendingLogprobs = null;
        }

        void Finish(string reason, bool flush)
        {
            string tail = flush ? text.Flush() : "";
            if (tail.Length > 0 || pendingLogprobs is not null) EmitDelta(tail);
            Request.Emit(new Finished(reason, Request.PromptIds.Count, sampled));
            Done = true;
        }

        public void Fail(int status, string type, string message)
        {
            Request.Emit(new Failed(status, type, message));
            Done = Failed = true;
        }

        TokenLogprob Logprob(float[] logits, int token, int top)
        {
            double max = logits.Max(), sum = 0;
            foreach (var l in logits) sum += Math.Exp(l - max);
            double lse = max + Math.Log(sum);
            var best = new List<(string, double)>();
            if (top > 0)
            {
                var order = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ThenBy(i => i).Take(top);
                foreach (var i in order) best.Add((served.Decode([i]), logits[i] - lse));
            }
            return new TokenLogprob(served.Decode([token]), logits[token] - lse, best);
        }
    }
}
