using System.CommandLine;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Server;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Engine;
using PeftSharp.Tokenization;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench serve</c>: starts the server in this process on a loopback port and drives it with its own
/// load generator: C concurrent streams, each sending a fixed number of streamed completions one after another.
/// Measures tokens/s and latency percentiles at 1, 4, 16 and 64 streams, and one adapter against many distinct
/// adapters at the same load. Bounded in requests and in time; it never leaves the machine.
/// </summary>
public static class BenchServeCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var dtype = CliOptions.DType();
        var streams = new Option<string>("--streams") { DefaultValueFactory = _ => "1,4,16,64", Description = "concurrency levels, comma-separated" };
        var perStream = new Option<int>("--requests-per-stream") { DefaultValueFactory = _ => 3, Description = "requests each stream sends in turn" };
        var maxTokens = new Option<int>("--max-tokens") { DefaultValueFactory = _ => 32, Description = "tokens generated per request (end of sequence ignored)" };
        var adapters = new Option<int>("--adapters") { DefaultValueFactory = _ => 16, Description = "distinct adapters for the many-adapter run" };
        var rank = new Option<int>("--r") { DefaultValueFactory = _ => 8, Description = "rank of the generated adapters" };
        var roundsOption = new Option<int>("--rounds") { DefaultValueFactory = _ => 3, Description = "interleaved one-adapter / many-adapter rounds" };
        var timeLimit = new Option<double>("--time-limit") { DefaultValueFactory = _ => 150, Description = "seconds after which the remaining requests are abandoned" };
        var json = CliOptions.Json();
        var command = new Command("serve", "serving throughput and latency: 1..64 concurrent streams, one adapter vs many")
        { model, dtype, streams, perStream, maxTokens, adapters, rank, roundsOption, timeLimit, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(dtype)!, parse.GetValue(streams)!, parse.GetValue(perStream),
            parse.GetValue(maxTokens), parse.GetValue(adapters), parse.GetValue(rank), parse.GetValue(roundsOption), parse.GetValue(timeLimit), parse.GetValue(json))));
        return command;
    }

    sealed record Level(int Streams, int Adapters, int Requests, int Failed, long Tokens, double Seconds, double P50, double P99, double Ttft50)
    {
        public double TokensPerSecond => Tokens / Seconds;
    }

    static int Run(string modelDir, string dtypeName, string streamsText, int perStream, int maxTokens, int adapterCount, int r, int rounds, double timeLimit, bool json)
    {
        var levels = streamsText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.TryParse(s, out int n) && n is >= 1 and <= 256 ? n : throw new PeftSharpException($"--streams: expected numbers in 1..256, got \"{s}\""))
            .ToList();
        if (perStream is < 1 or > 100) throw new PeftSharpException($"--requests-per-stream: expected 1..100, got {perStream}");
        if (adapterCount is < 1 or > 64) throw new PeftSharpException($"--adapters: expected 1..64, got {adapterCount}");
        if (rounds is < 1 or > 10) throw new PeftSharpException($"--rounds: expected 1..10, got {rounds}");
        if (maxTokens < 1) throw new PeftSharpException($"--max-tokens: expected a positive count, got {maxTokens}");
        var dt = CliOptions.ParseDType(dtypeName);
        var tokenizer = ModelTokenizer.Load(modelDir);
        using var loaded = ModelLoader.Load(modelDir, dt);
        loaded.eval();
        string temp = Path.Combine(Path.GetTempPath(), "peftsharp-bench-serve-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            // Distinct random adapters (B ≠ 0, so each changes the output), written in PEFT's format.
            var names = Enumerable.Range(0, adapterCount).Select(i => $"a{i}").ToList();
            using (var scratch = ModelLoader.Load(modelDir, dt))
            {
                var lora = LoraModel.Create(scratch, new LoraConfig { R = r, LoraAlpha = 2 * r, InitLoraWeights = InitLoraWeights.False }, names[0], seed: 100);
                for (int i = 1; i < names.Count; i++) lora.AddAdapter(names[i], new LoraConfig { R = r, LoraAlpha = 2 * r, InitLoraWeights = InitLoraWeights.False }, seed: 100 + i, trainable: false);
                foreach (var n in names) AdapterFiles.Save(lora, temp, n); // PEFT puts a named adapter in temp/NAME
            }
            int maxBatch = Math.Max(levels.Max(), 16);
            var options = new ServerOptions
            {
                Host = "127.0.0.1", Port = 0, MaxBatchSize = maxBatch, MaxLoadedAdapters = adapterCount, MaxQueue = 1024,
                AdapterDir = temp, Adapters = names.Select(n => (n, Path.Combine(temp, n))).ToList(),
            };
            var served = new ServedModel(loaded, tokenizer, new PeftAdapterBackend(loaded), "base");
            var app = ServerHost.Build(served, options);
            app.StartAsync().GetAwaiter().GetResult();
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(timeLimit);
            using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 512 }) { BaseAddress = new Uri(app.Urls.First()), Timeout = TimeSpan.FromSeconds(timeLimit) };
            Console.Error.WriteLine($"bench serve: {Path.GetFileName(Path.TrimEndingDirectorySeparator(modelDir))}, {ModelLoader.DTypeName(dt)}, {maxTokens} tokens per request, " +
                                    $"{perStream} requests per stream, {adapterCount} adapters of rank {r}, {TorchSharp.torch.get_num_threads()} threads, server on {app.Urls.First()}");
            var results = new List<Level>();
            try
            {
                Drive(client, 2, 1, ["a0"], maxTokens, deadline); // warm-up
                foreach (int c in levels)
                {
                    results.Add(Drive(client, c, perStream, ["a0"], maxTokens, deadline));
                    Report(results[^1]);
                }
                // One adapter against many at the same load, interleaved (A, B, A, B, ...) so drift on a shared
                // machine hits both alike; the ratio is of the medians.
                int same = levels.Contains(16) ? 16 : levels.Max();
                var oneRuns = new List<Level>();
                var manyRuns = new List<Level>();
                for (int round = 0; round < rounds; round++)
                {
                    oneRuns.Add(Drive(client, same, perStream, ["a0"], maxTokens, deadline));
                    Report(oneRuns[^1]);
                    manyRuns.Add(Drive(client, same, perStream, names, maxTokens, deadline));
                    Report(manyRuns[^1]);
                }
                results.AddRange(oneRuns);
                results.AddRange(manyRuns);
                double oneRate = BenchCommand.Median(oneRuns.Select(l => l.TokensPerSecond));
                double manyVsOne = BenchCommand.Median(manyRuns.Select(l => l.TokensPerSecond)) / oneRate;
                var single = results.FirstOrDefault(l => l.Streams == 1);
                double? scaling = single is null ? null : BenchCommand.Median(results.Where(l => l.Streams == same && l.Adapters == 1).Select(l => l.TokensPerSecond)) / single.TokensPerSecond;
                Console.Error.WriteLine($"{adapterCount} adapters vs 1 at {same} streams: {manyVsOne:F2}x tokens/s" +
                                        (scaling is double s ? $"; {same} streams vs 1: {s:F2}x tokens/s" : ""));
                if (json)
                    JsonOutput.Write(new
                    {
                        levels = results.Select(l => new
                        {
                            streams = l.Streams, adapters = l.Adapters, requests = l.Requests, failed = l.Failed, tokens = l.Tokens,
                            seconds = l.Seconds, tokens_per_second = Finite(l.TokensPerSecond), p50_latency_s = Finite(l.P50), p99_latency_s = Finite(l.P99),
                            p50_ttft_s = Finite(l.Ttft50),
                        }),
                        many_vs_one_adapter = Finite(manyVsOne),
                        streams_vs_one_stream = scaling is double sc ? Finite(sc) : null,
                    });
            }
            finally
            {
                app.StopAsync().GetAwaiter().GetResult();
                ((IDisposable)app).Dispose();
            }
            return 0;
        }
        finally
        {
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
        }
    }

    static void Report(Level l) =>
        Console.Error.WriteLine($"  {l.Streams,3} streams, {l.Adapters,2} adapter(s): {l.TokensPerSecond,8:F1} tokens/s, latency p50 {l.P50:F3} s p99 {l.P99:F3} s, " +
                                $"first token p50 {l.Ttft50:F3} s ({l.Requests} requests{(l.Failed > 0 ? $", {l.Failed} failed" : "")})");

    static Level Drive(HttpClient client, int streams, int perStream, IReadOnlyList<string> models, int maxTokens, DateTime deadline)
    {
        var latencies = new List<double>();
        var ttfts = new List<double>();
        long tokens = 0;
        int failed = 0, counter = 0;
        var gate = new object();
        var clock = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, streams).Select(async stream =>
        {
            for (int k = 0; k < perStream && DateTime.UtcNow < deadline; k++)
            {
                int n = Interlocked.Increment(ref counter);
                string model = models[n % models.Count];
                var body = new
                {
                    model, prompt = $"Request {n}: to be, or not to be, that is the question", max_tokens = maxTokens, temperature = 0,
                    ignore_eos = true, stream = true, stream_options = new { include_usage = true },
                };
                var started = clock.Elapsed.TotalSeconds;
                try
                {
                    var (first, used) = await Stream(client, body, clock);
                    lock (gate) { latencies.Add(clock.Elapsed.TotalSeconds - started); ttfts.Add(first - started); tokens += used; }
                }
                catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException or JsonException)
                {
                    Interlocked.Increment(ref failed);
                }
            }
        }).ToArray();
        Task.WaitAll(workers);
        double seconds = clock.Elapsed.TotalSeconds;
        return new Level(streams, models.Count, latencies.Count + failed, failed, tokens, seconds,
            Percentile(latencies, 0.5), Percentile(latencies, 0.99), Percentile(ttfts, 0.5));
    }

    /// <summary>One streamed request: the time its first text arrived and the completion tokens its usage chunk reports.</summary>
    static async Task<(double FirstText, long Tokens)> Stream(HttpClient client, object body, Stopwatch clock)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, new MediaTypeHeaderValue("application/json")),
        };
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        if (!response.IsSuccessStatusCode) throw new HttpRequestException($"status {(int)response.StatusCode}");
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        double first = double.NaN;
        long tokens = 0;
        while (await reader.ReadLineAsync() is string line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            string data = line[6..];
            if (data == "[DONE]") break;
            if (double.IsNaN(first)) first = clock.Elapsed.TotalSeconds;
            using var doc = JsonDocument.Parse(data);
            if (doc.RootElement.TryGetProperty("usage", out var usage)) tokens = usage.GetProperty("completion_tokens").GetInt64();
        }
        return (first, tokens);
    }

    /// <summary>JSON has no NaN: a level whose requests all failed or were abandoned reports null.</summary>
    static double? Finite(double x) => double.IsFinite(x) ? x : null;

    static double Percentile(List<double> values, double q)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToArray();
        return sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
    }
}
