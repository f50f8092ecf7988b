using System.Globalization;
using System.Text;

namespace PeftSharp.Server.Metrics;

/// <summary>
/// Counters, gauges and histograms the server exposes on /metrics in Prometheus' text format (version 0.0.4),
/// written by hand: a few dozen lines do not justify a dependency.
/// </summary>
public sealed class ServerMetrics
{
    static readonly double[] LatencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    sealed class Histogram
    {
        public readonly long[] Counts = new long[LatencyBuckets.Length];
        public long Count;
        public double Sum;
    }

    readonly object gate = new();
    readonly Dictionary<(string Model, string Status), long> requests = [];
    readonly Dictionary<string, long> tokensByModel = new(StringComparer.Ordinal);
    readonly Histogram ttft = new(), e2e = new();
    readonly Queue<(DateTime Time, int Tokens)> recent = new();
    long promptTokens, generationTokens, steps, stepRows, prefills, prefillRows;

    /// <summary>Gauges read when /metrics is served.</summary>
    public Func<int> QueueLength { get; set; } = () => 0;
    public Func<int> BatchSize { get; set; } = () => 0;
    public Func<int> LoadedAdapters { get; set; } = () => 0;
    public Func<long> Evictions { get; set; } = () => 0;

    /// <summary>A request finished with an HTTP status (200 for success) for a model name.</summary>
    public void Request(string model, int status)
    {
        lock (gate) requests[(model, status.ToString(CultureInfo.InvariantCulture))] = requests.GetValueOrDefault((model, status.ToString(CultureInfo.InvariantCulture))) + 1;
    }

    public void Prompt(int tokens) => Interlocked.Add(ref promptTokens, tokens);

    /// <summary>One prefill forward ran over <paramref name="rows"/> new requests.</summary>
    public void PrefillBatch(int rows)
    {
        lock (gate) { prefills++; prefillRows += rows; }
    }

    public void FirstToken(TimeSpan latency) => Observe(ttft, latency.TotalSeconds);

    public void Completed(TimeSpan latency) => Observe(e2e, latency.TotalSeconds);

    /// <summary>One decode step (or prefill) produced <paramref name="tokens"/> tokens for these models.</summary>
    public void Generated(IEnumerable<string> models, int rows)
    {
        var now = DateTime.UtcNow;
        lock (gate)
        {
            int n = 0;
            foreach (var m in models) { tokensByModel[m] = tokensByModel.GetValueOrDefault(m) + 1; n++; }
            generationTokens += n;
            steps++;
            stepRows += rows;
            recent.Enqueue((now, n));
            while (recent.Count > 0 && now - recent.Peek().Time > TimeSpan.FromSeconds(10)) recent.Dequeue();
        }
    }

    void Observe(Histogram h, double seconds)
    {
        lock (gate)
        {
            for (int i = 0; i < LatencyBuckets.Length; i++) if (seconds <= LatencyBuckets[i]) h.Counts[i]++;
            h.Count++;
            h.Sum += seconds;
        }
    }

    public string Render()
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        void Head(string name, string type, string help) => sb.Append(c, $"# HELP {name} {help}\n# TYPE {name} {type}\n");
        lock (gate)
        {
            Head("peftsharp_requests_total", "counter", "Requests answered, by model (base or adapter name) and HTTP status.");
            foreach (var ((model, status), n) in requests.OrderBy(k => k.Key.Model, StringComparer.Ordinal).ThenBy(k => k.Key.Status, StringComparer.Ordinal))
                sb.Append(c, $"peftsharp_requests_total{{model=\"{Escape(model)}\",status=\"{status}\"}} {n}\n");
            Head("peftsharp_prompt_tokens_total", "counter", "Prompt tokens prefilled.");
            sb.Append(c, $"peftsharp_prompt_tokens_total {Interlocked.Read(ref promptTokens)}\n");
            Head("peftsharp_generation_tokens_total", "counter", "Tokens generated, by model.");
            foreach (var (model, n) in tokensByModel.OrderBy(k => k.Key, StringComparer.Ordinal))
                sb.Append(c, $"peftsharp_generation_tokens_total{{model=\"{Escape(model)}\"}} {n}\n");
            double window = recent.Count == 0 ? 0 : Math.Max(1e-3, (DateTime.UtcNow - recent.Peek().Time).TotalSeconds);
            Head("peftsharp_generation_tokens_per_second", "gauge", "Tokens generated per second over the last 10 seconds.");
            sb.Append(c, $"peftsharp_generation_tokens_per_second {(window == 0 ? 0 : recent.Sum(r => r.Tokens) / window):G6}\n");
            Head("peftsharp_queue_length", "gauge", "Requests waiting for a batch slot.");
            sb.Append(c, $"peftsharp_queue_length {QueueLength()}\n");
            Head("peftsharp_batch_size", "gauge", "Rows in the running batch.");
            sb.Append(c, $"peftsharp_batch_size {BatchSize()}\n");
            Head("peftsharp_mean_batch_size", "gauge", "Mean rows per decode step since start.");
            sb.Append(c, $"peftsharp_mean_batch_size {(steps == 0 ? 0 : (double)stepRows / steps):G6}\n");
            Head("peftsharp_prefill_forwards_total", "counter", "Prefill forwards run (several new requests share one when they arrive together).");
            sb.Append(c, $"peftsharp_prefill_forwards_total {prefills}\n");
            Head("peftsharp_mean_prefill_batch_size", "gauge", "Mean requests per prefill forward since start.");
            sb.Append(c, $"peftsharp_mean_prefill_batch_size {(prefills == 0 ? 0 : (double)prefillRows / prefills):G6}\n");
            Head("peftsharp_loaded_adapters", "gauge", "Adapters resident in slots.");
            sb.Append(c, $"peftsharp_loaded_adapters {LoadedAdapters()}\n");
            Head("peftsharp_adapter_evictions_total", "counter", "Adapters unloaded to make room (least recently used first).");
            sb.Append(c, $"peftsharp_adapter_evictions_total {Evictions()}\n");
            WriteHistogram(sb, "peftsharp_time_to_first_token_seconds", "Time from arrival to the first generated token.", ttft);
            WriteHistogram(sb, "peftsharp_request_duration_seconds", "Time from arrival to the last generated token.", e2e);
        }
        return sb.ToString();

        void WriteHistogram(StringBuilder b, string name, string help, Histogram h)
        {
            Head(name, "histogram", help);
            for (int i = 0; i < LatencyBuckets.Length; i++)
                b.Append(c, $"{name}_bucket{{le=\"{LatencyBuckets[i].ToString(c)}\"}} {h.Counts[i]}\n");
            b.Append(c, $"{name}_bucket{{le=\"+Inf\"}} {h.Count}\n{name}_sum {h.Sum.ToString("G9", c)}\n{name}_count {h.Count}\n");
        }
    }

    static string Escape(string label) => label.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");
}
