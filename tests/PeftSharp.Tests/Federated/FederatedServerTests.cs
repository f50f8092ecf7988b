using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Federated;

/// <summary>
/// `federated server` in a child process over loopback, with the test acting as clients through the HTTP API (so the
/// uploaded factors are known and the aggregate is checked against a plain weighted mean), a client that checks in
/// and never uploads, a killed and restarted server, and `federated client` processes end to end.
/// </summary>
public class FederatedServerTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";

    static string TinyModel()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, new NaiveGpt2Config { VocabSize = 1003, NEmbd = 16, NLayer = 1, NHead = 2, NPositions = 32 }, new TinyGpt2Options { Seed = 3 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        return dir;
    }

    /// <summary>A running server: its process and base address (read from the "listening on" line on stderr).</summary>
    sealed class Server : IDisposable
    {
        public readonly Process Process;
        public readonly Uri Url;
        public readonly System.Text.StringBuilder Stderr = new();
        public Task<string> Stdout;

        public Server(params string[] args)
        {
            Process = CliRunner.Start(args);
            Stdout = Process.StandardOutput.ReadToEndAsync();
            var found = new TaskCompletionSource<Uri>();
            Process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null) { found.TrySetException(new InvalidOperationException("server exited: " + Stderr)); return; }
                lock (Stderr) Stderr.AppendLine(e.Data);
                int at = e.Data.IndexOf("listening on http://", StringComparison.Ordinal);
                if (at >= 0) found.TrySetResult(new Uri(e.Data[(at + "listening on ".Length)..].Split(' ', ',')[0]));
            };
            Process.BeginErrorReadLine();
            Url = found.Task.WaitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult();
        }

        public int WaitForExit()
        {
            Assert.True(Process.WaitForExit(TimeSpan.FromMinutes(2)), "server did not exit: " + Stderr);
            Process.WaitForExit();
            return Process.ExitCode;
        }

        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            Process.Dispose();
        }
    }

    static HttpClient Http(Uri url, string? token = "s3cret")
    {
        var http = new HttpClient { BaseAddress = new Uri(url, "/federated/v1/") };
        if (token is not null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    static JsonElement CheckIn(HttpClient http, string client)
    {
        var r = http.PostAsync($"checkin?client={client}", null).Result;
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        return JsonDocument.Parse(r.Content.ReadAsStringAsync().Result).RootElement.Clone();
    }

    static HttpResponseMessage Upload(HttpClient http, int round, string client, long samples, byte[] body) =>
        http.PostAsync($"rounds/{round}/update?client={client}&samples={samples}", new ByteArrayContent(body)).Result;

    /// <summary>Random factors with the global adapter's keys and shapes.</summary>
    static List<NaiveTensor> RandomAdapter(Dictionary<string, NaiveTensor> layout, int seed)
    {
        var rnd = new Random(seed);
        return layout.Values.Select(t => t with { Values = t.Values.Select(_ => (float)Math.Round(rnd.NextDouble() * 2 - 1, 3)).ToArray() }).ToList();
    }

    static void AssertWeightedMean(string adapterFile, IReadOnlyList<(List<NaiveTensor> Factors, long Samples)> clients)
    {
        var got = NaiveSafetensors.Read(adapterFile);
        double total = clients.Sum(c => (double)c.Samples);
        foreach (var t in clients[0].Factors)
        {
            var values = got[t.Name].Values;
            for (int i = 0; i < values.Length; i++)
            {
                double want = 0;
                foreach (var (factors, samples) in clients) want += samples / total * factors.Single(f => f.Name == t.Name).Values[i];
                Assert.True(Math.Abs(want - values[i]) < 1e-5, $"{t.Name}[{i}]: {values[i]} vs {want}");
            }
        }
    }

    static void WaitUntil(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), "timed out waiting for " + what);
            Thread.Sleep(100);
        }
    }

    [Fact]
    public async Task RoundsAverageUploadsCloseAtTheDeadlineWithoutADroppedClientAndResumeAfterARestart()
    {
        var model = TinyModel();
        var output = Path.Combine(model, "fed");
        string[] args = ["federated", "server", "--model", model, "--out", output, "--rounds", "2", "--clients-per-round", "3", "--min-clients", "2",
                         "--round-deadline", "3", "--r", "2", "--port", "0", "--token", "s3cret", "--json"];
        List<NaiveTensor> c0, c1;
        using (var server = new Server(args))
        {
            using var http = Http(server.Url);
            Assert.Equal(HttpStatusCode.Unauthorized, (await Http(server.Url, token: "wrong").GetAsync("status")).StatusCode);
            var start = NaiveSafetensors.Read(Path.Combine(output, "round-0", "adapter_model.safetensors"));
            Assert.Equal("train", CheckIn(http, "c0").GetProperty("status").GetString());
            Assert.Equal("train", CheckIn(http, "c1").GetProperty("status").GetString());
            Assert.Equal("train", CheckIn(http, "ghost").GetProperty("status").GetString());   // selected, never uploads
            Assert.Equal("wait", CheckIn(http, "late").GetProperty("status").GetString());     // K = 3 slots taken
            // The round's adapter is round-0's file, byte for byte.
            Assert.Equal(File.ReadAllBytes(Path.Combine(output, "round-0", "adapter_model.safetensors")),
                         await http.GetByteArrayAsync("rounds/1/adapter_model.safetensors"));
            c0 = RandomAdapter(start, 1);
            c1 = RandomAdapter(start, 2);
            // A wrong shape is refused with a one-line error and the server keeps going.
            var bad = start.Values.Select(t => t with { Shape = [t.Values.Length], Values = t.Values }).ToList();
            var refused = Upload(http, 1, "c0", 1, NaiveSafetensors.Serialize(bad));
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.DoesNotContain("\n", JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString());
            Assert.Equal(HttpStatusCode.Conflict, Upload(http, 1, "late", 1, NaiveSafetensors.Serialize(c0)).StatusCode);   // not selected
            Assert.Equal(HttpStatusCode.OK, Upload(http, 1, "c0", 1, NaiveSafetensors.Serialize(c0)).StatusCode);
            Assert.Equal(HttpStatusCode.OK, Upload(http, 1, "c1", 3, NaiveSafetensors.Serialize(c1)).StatusCode);
            // The ghost never uploads: the round closes at the 3 s deadline with c0 and c1.
            WaitUntil(() => File.Exists(Path.Combine(output, "round-1", "round.json")), "round 1's checkpoint");
            AssertWeightedMean(Path.Combine(output, "round-1", "adapter_model.safetensors"), [(c0, 1), (c1, 3)]);
            var info = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "round-1", "round.json"))).RootElement;
            Assert.Equal(["c0", "c1"], info.GetProperty("clients").EnumerateArray().Select(c => c.GetProperty("name").GetString()!).ToArray());
            // Round 2 opens; the server is killed in the middle of it.
            WaitUntil(() => CheckIn(http, "c0").GetProperty("round").GetInt32() == 2, "round 2");
            server.Process.Kill(entireProcessTree: true);
            server.Process.WaitForExit();
        }
        using (var server = new Server(args))
        {
            Assert.Contains("resuming", server.Stderr.ToString());
            using var http = Http(server.Url);
            var r2 = new List<(List<NaiveTensor>, long)>();
            foreach (var name in new[] { "c0", "c1", "c2" })
                Assert.Equal(2, CheckIn(http, name).GetProperty("round").GetInt32());
            // Round 2 starts from round 1's aggregate.
            Assert.Equal(File.ReadAllBytes(Path.Combine(output, "round-1", "adapter_model.safetensors")),
                         await http.GetByteArrayAsync("rounds/2/adapter_model.safetensors"));
            var layout2 = NaiveSafetensors.Read(Path.Combine(output, "round-1", "adapter_model.safetensors"));
            foreach (var (name, samples, seed) in new[] { ("c0", 2L, 5), ("c1", 1L, 6), ("c2", 5L, 7) })
            {
                var f = RandomAdapter(layout2, seed);
                r2.Add((f, samples));
                Assert.Equal(HttpStatusCode.OK, Upload(http, 2, name, samples, NaiveSafetensors.Serialize(f)).StatusCode);
            }
            // All three reported: the round closes at once and the server finishes.
            Assert.Equal(0, server.WaitForExit());
            AssertWeightedMean(Path.Combine(output, "round-2", "adapter_model.safetensors"), r2);
            AssertWeightedMean(Path.Combine(output, "adapter_model.safetensors"), r2);
            var json = JsonDocument.Parse((await server.Stdout).TrimEnd().Split('\n')[^1]).RootElement;
            Assert.Equal(1, json.GetProperty("resumed_after").GetInt32());
            Assert.Equal(2, json.GetProperty("clients").GetArrayLength());
        }
    }

    [Fact]
    public async Task ClientProcessesTrainAndUploadAndTooFewReportsStopTheServerWithAClearMessage()
    {
        var model = TinyModel();
        var data = Path.Combine(model, "data");
        Directory.CreateDirectory(data);
        File.WriteAllText(Path.Combine(data, "lower.txt"), string.Concat(Enumerable.Repeat(Text.ToLowerInvariant(), 6)));
        File.WriteAllText(Path.Combine(data, "upper.txt"), string.Concat(Enumerable.Repeat(Text.ToUpperInvariant(), 6)));
        var output = Path.Combine(model, "fed");
        using (var server = new Server("federated", "server", "--model", model, "--out", output, "--rounds", "1", "--clients-per-round", "2",
                                       "--local-steps", "1", "--batch-size", "2", "--r", "2", "--aggregation", "ffa-lora", "--round-deadline", "120", "--port", "0"))
        {
            var clients = new[] { "lower", "upper" }.Select(c => Task.Run(() => CliRunner.Run("federated", "client", "--server", server.Url.ToString(),
                "--model", model, "--data", Path.Combine(data, c + ".txt"), "--seq-len", "16", "--json"))).ToArray();
            foreach (var c in clients)
            {
                var r = await c;
                Assert.True(r.ExitCode == 0, r.Stderr);
                Assert.Equal(1, r.Json().GetProperty("rounds").GetArrayLength());
            }
            Assert.Equal(0, server.WaitForExit());
        }
        // The aggregate is the sample-weighted mean of the two uploads the server kept.
        var info = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "round-1", "round.json"))).RootElement;
        var uploads = info.GetProperty("clients").EnumerateArray().Select(c =>
            (NaiveSafetensors.Read(Path.Combine(output, "round-1", "clients", c.GetProperty("name").GetString() + ".safetensors")).Values.ToList(),
             c.GetProperty("samples").GetInt64())).ToList();
        Assert.Equal(2, uploads.Count);
        AssertWeightedMean(Path.Combine(output, "round-1", "adapter_model.safetensors"), uploads);
        // FFA-LoRA: A is round 0's everywhere.
        var a0 = NaiveSafetensors.Read(Path.Combine(output, "round-0", "adapter_model.safetensors"));
        foreach (var (name, t) in NaiveSafetensors.Read(Path.Combine(output, "round-1", "adapter_model.safetensors")))
            if (name.Contains("lora_A")) Assert.Equal(a0[name].Values, t.Values);

        // One of two required clients reports: the round closes at its deadline and the server stops, exit 1.
        using (var server = new Server("federated", "server", "--model", model, "--out", Path.Combine(model, "fed2"), "--rounds", "1",
                                       "--clients-per-round", "2", "--min-clients", "2", "--round-deadline", "1", "--r", "2", "--port", "0"))
        {
            using var http = Http(server.Url, token: null);
            CheckIn(http, "only");
            var start = NaiveSafetensors.Read(Path.Combine(model, "fed2", "round-0", "adapter_model.safetensors"));
            Upload(http, 1, "only", 1, NaiveSafetensors.Serialize(RandomAdapter(start, 3)));
            Assert.Equal(1, server.WaitForExit());
            string last = server.Stderr.ToString().TrimEnd().Split('\n')[^1];
            Assert.StartsWith("error: round 1: 1 of the selected clients", last);
            Assert.Contains("--min-clients 2", last);
        }
    }

    [Fact]
    public void BadInputIsAOneLineError()
    {
        var model = TinyModel();
        var empty = Path.Combine(model, "empty.txt");
        File.WriteAllText(empty, "");
        Assert.Contains("empty", CliRunner.AssertUserError(CliRunner.Run("federated", "client", "--model", model, "--data", empty)));
        string[] server = ["federated", "server", "--model", model, "--out", Path.Combine(model, "o"), "--port", "0"];
        Assert.Contains("--dp-delta", CliRunner.AssertUserError(CliRunner.Run([.. server, "--dp-clip", "1", "--dp-noise-multiplier", "1", "--dp-delta", "1"])));
        Assert.Contains("--dp-noise-multiplier", CliRunner.AssertUserError(CliRunner.Run([.. server, "--dp-clip", "1", "--dp-noise-multiplier", "0"])));
        Assert.Contains("--min-clients", CliRunner.AssertUserError(CliRunner.Run([.. server, "--clients-per-round", "2", "--min-clients", "3"])));
    }
}
