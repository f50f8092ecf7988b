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
/// finished rows leave and waiting requests join (those joining together are prefilled in shared left-padded
/// forwards, then their KV cache is appended to the batch's, right-aligned). Every step runs one forward for the
/// shared group (base and gathered LoRA rows, each with its own adapter, and rows whose soft prompt is already in
/// their cache) and one per own-batch adapter in use ((IA)³, bottleneck...). Greedy results do not depend on what
/// else is in the batch: each row keeps its own positions and masks the padding.
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
    const string SharedGroup = "";
    readonly Dictionary<string, Group> groups = new(StringComparer.Ordinal); // SharedGroup, or an own-batch adapter's slot
    readonly List<Start> starting = [];
    readonly List<GenerationRequest> waiting = []; // need an adapter slot that running rows hold
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
                    foreach (var group in groups.Values.ToList())
                        if (group.Rows.Count > 0) Step(group);
                }
                catch (Exception e)
                {
                    // A bug or an allocation failure: fail the running rows, keep serving.
                    logger.LogError(e, "decode step failed");
                    foreach (var r in AllRows) r.Fail(500, "server_error", "internal error while generating");
                    foreach (var s in starting) s.Request.Emit(new Failed(500, "server_error", "internal error while generating"));
                    starting.Clear();
                    ResetCaches();
                }
                batchSize = RowCount;
                waitingCount = waiting.Count;
                if (RowCount == 0)
                {
                    if (stopRequested && queue.Reader.Count == 0 && waiting.Count == 0) break;
                    wake.Wait(100);
                }
            }
        }
        finally
        {
            ResetCaches();
            stopped.TrySetResult();
        }
    }

    void RunCommands()
    {
        while (commands.TryDequeue(out var command)) command();
    }

    IEnumerable<Row> AllRows => groups.Values.SelectMany(g => g.Rows);
    int RowCount => groups.Values.Sum(g => g.Rows.Count);

    /// <summary>Slots that running rows (and requests about to be prefilled) need: these cannot be unloaded.</summary>
    HashSet<string> InUseSlots() =>
        AllRows.Select(r => r.Slot).Concat(starting.Select(s => s.Slot)).OfType<string>().ToHashSet(StringComparer.Ordinal);

    void FailAll(int status, string type, string message)
    {
        foreach (var r in AllRows) r.Fail(status, type, message);
        ResetCaches();
        foreach (var w in waiting) w.Emit(new Failed(status, type, message));
        waiting.Clear();
        while (queue.Reader.TryRead(out var q)) q.Emit(new Failed(status, type, message));
    }

    void Admit()
    {
        // Requests waiting for an adapter slot go first, in arrival order; then the queue. All that start now are
        // prefilled together.
        int room = options.MaxBatchSize - RowCount;
        for (int i = 0; i < waiting.Count && starting.Count < room; )
        {
            if (TryStart(waiting[i])) waiting.RemoveAt(i);
            else i++;
        }
        while (starting.Count < room && waiting.Count < options.MaxQueue && queue.Reader.TryRead(out var request))
            if (!TryStart(request)) waiting.Add(request);
        if (starting.Count == 0) return;
        var batch = starting.ToList();
        Prefill(batch);
        starting.Clear();
    }

    /// <summary>Queues the request for this round's prefill (or ends it with an error); false when it must wait for an adapter slot.</summary>
    bool TryStart(GenerationRequest request)
    {
        if (request.Cancelled) { request.Emit(new Failed(499, "invalid_request_error", "client closed the request")); return true; }
        if (DateTime.UtcNow > request.Deadline)
        {
            request.Emit(new Failed(504, "server_error", $"the request waited longer than the server's request timeout ({options.RequestTimeout.TotalSeconds:0} s)"));
            return true;
        }
        if (request.Adapter is not string name) { starting.Add(new Start(request, null, RowMode.Gathered, 0)); return true; }
        var (result, slot, error) = adapters.Ensure(name, InUseSlots());
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
        int leading = served.Adapters.LeadingPositions(slot!);
        if (request.PromptIds.Count + leading >= served.ContextLength)
        {
            request.Emit(new Failed(400, "invalid_request_error",
                $"This model's maximum prompt length with adapter `{name}` is {served.ContextLength - leading - 1} tokens (its {leading} virtual/prefix positions take context); the prompt has {request.PromptIds.Count} tokens.",
                "context_length_exceeded"));
            return true;
        }
        starting.Add(new Start(request, slot, served.Adapters.ModeOf(slot!), leading));
        return true;
    }

    /// <summary>
    /// Prefills the requests that start in this round, as few forwards as is correct: base and gathered (LoRA) rows in
    /// left-padded batches with per-row adapters; an own-batch adapter's rows in batches of their own; a prefill-only
    /// adapter's rows (virtual tokens or prefixes go in front of the prompt, which padding would split) one by one.
    /// </summary>
    void Prefill(List<Start> batch)
    {
        var gathered = batch.Where(s => s.Mode == RowMode.Gathered).ToList();
        foreach (var chunk in Chunks(gathered))
            PrefillBatch(chunk, () => served.Adapters.UseRows(chunk.Select(s => s.Slot).ToList()), SharedGroup);
        foreach (var own in batch.Where(s => s.Mode == RowMode.OwnBatch).GroupBy(s => s.Slot!))
            foreach (var chunk in Chunks(own.ToList()))
                PrefillBatch(chunk, () => served.Adapters.Use(own.Key), own.Key);
        foreach (var one in batch.Where(s => s.Mode == RowMode.PrefillOnly))
            PrefillBatch([one], () => served.Adapters.Use(one.Slot!), SharedGroup);
    }

    /// <summary>Splits starts so that a padded prefill holds at most <see cref="ServerOptions.MaxPrefillTokens"/> positions (one row always fits).</summary>
    IEnumerable<List<Start>> Chunks(List<Start> starts)
    {
        var chunk = new List<Start>();
        int width = 0;
        foreach (var s in starts.OrderBy(s => s.Request.PromptIds.Count))
        {
            int w = Math.Max(width, s.Request.PromptIds.Count);
            if (chunk.Count > 0 && (long)w * (chunk.Count + 1) > options.MaxPrefillTokens)
            {
                yield return chunk;
                chunk = [];
                w = s.Request.PromptIds.Count;
            }
            chunk.Add(s);
            width = w;
        }
        if (chunk.Count > 0) yield return chunk;
    }

    void PrefillBatch(List<Start> starts, Func<IDisposable> useAdapters, string groupKey)
    {
        var model = served.Model;
        int b = starts.Count;
        int width = starts.Max(s => s.Request.PromptIds.Count);
        var padding = starts.Select(s => (long)(width - s.Request.PromptIds.Count)).ToArray();
        var input = new long[b * width];
        for (int r = 0; r < b; r++)
        {
            var ids = starts[r].Request.PromptIds;
            for (int j = 0; j < ids.Count; j++) input[r * width + padding[r] + j] = ids[j];
        }
        using var fresh = model.NewCache();
        fresh.LeftPadding = padding.Any(p => p > 0) ? padding : null;
        float[] all;
        long vocab;
        using (var scope = NewDisposeScope())
        using (useAdapters())
        {
            var ids = tensor(input, device: model.Device).view(b, width);
            var hidden = model.Hidden(ids, fresh, fresh.KeyMask(width, model.Device));
            var logits = model.Logits(hidden.select(1, -1)).to_type(ScalarType.Float32).cpu();
            vocab = logits.shape[1];
            all = logits.data<float>().ToArray();
        }
        metrics.PrefillBatch(b);
        var keep = new List<int>();
        var started = new List<Row>();
        for (int r = 0; r < b; r++)
        {
            var s = starts[r];
            metrics.Prompt(s.Request.PromptIds.Count);
            // A prefill-only adapter has done its work once the prompt is cached: the row decodes as the base model.
            var row = new Row(s.Request, s.Mode == RowMode.PrefillOnly ? null : s.Slot, s.Mode == RowMode.Gathered ? s.Slot : null, served, s.Leading);
            metrics.FirstToken(DateTime.UtcNow - s.Request.Arrived);
            row.Accept(all.AsSpan((int)(r * vocab), (int)vocab).ToArray());
            metrics.Generated([s.Request.Adapter ?? served.Name], 1);
            if (row.Done) { Complete(row); continue; }
            keep.Add(r);
            started.Add(row);
        }
        if (keep.Count == 0) return;
        if (keep.Count < b) fresh.SelectRows(keep);
        if (!groups.TryGetValue(groupKey, out var group))
            groups[groupKey] = group = new Group(groupKey == SharedGroup ? null : groupKey);
        group.Cache ??= model.NewCache();
        group.Cache.AppendRows(fresh);
        group.Rows.AddRange(started);
    }

    void Step(Group group)
    {
        var model = served.Model;
        var c = group.Cache!;
        var rows = group.Rows;
        int b = rows.Count;
        float[] all;
        long vocab;
        using (var scope = NewDisposeScope())
        using (group.Exclusive is string slot ? served.Adapters.Use(slot) : served.Adapters.UseRows(rows.Select(r => r.RowSlot).ToList()))
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
        if (rows.Count > 0) { c.SelectRows(keep); return; }
        group.Cache = null;
        c.Dispose();
        if (group.Exclusive is not null) groups.Remove(group.Exclusive);
    }

    void Complete(Row row)
    {
        if (!row.Failed) metrics.Completed(DateTime.UtcNow - row.Request.Arrived);
    }

    void ResetCaches()
    {
        foreach (var g in groups.Values) g.Cache?.Dispose();
        groups.Clear();
    }

    public void Dispose()
    {
        wake.Dispose();
        ResetCaches();
    }

    /// <summary>A request whose adapter is resident, to be prefilled in this round.</summary>
    readonly record struct Start(GenerationRequest Request, string? Slot, RowMode Mode, int Leading);

    /// <summary>
    /// Rows that decode together in one forward over one KV cache: the shared group (base model, gathered LoRA rows,
    /// rows whose prefill-only adapter is done) or the rows of one own-batch adapter (<see cref="Exclusive"/>).
    /// </summary>
    sealed class Group(string? exclusive)
    {
        public string? Exclusive { get; } = exclusive;
        public List<Row> Rows { get; } = [];
        public KvCache? Cache { get; set; }
    }

    /// <summary>One running request: its sampler, the text it has produced, and when it stops.</summary>
    /// <param name="slot">the adapter slot the row needs while it runs (null: none, or a prefill-only adapter whose work is done).</param>
    /// <param name="rowSlot">the gathered adapter slot the row passes to the per-row forward (null: the base model).</param>
    /// <param name="leading">context positions the adapter's virtual tokens or prefix hold in the row's cache.</param>
    sealed class Row(GenerationRequest request, string? slot, string? rowSlot, ServedModel served, int leading)
    {
        readonly Sampler sampler = new(request.Sampling.Temperature, request.Sampling.TopP, request.Sampling.Seed);
        readonly TextStream text = new(served.Decode, request.Sampling.Stop ?? []);
        readonly List<int> generated = [];
        List<TokenLogprob>? pendingLogprobs;
        int sampled;

        public GenerationRequest Request { get; } = request;
        public string? Slot { get; } = slot;
        public string? RowSlot { get; } = rowSlot;
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
            else if (generated.Count >= Request.Sampling.MaxTokens || leading + Request.PromptIds.Count + generated.Count >= served.ContextLength)
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
