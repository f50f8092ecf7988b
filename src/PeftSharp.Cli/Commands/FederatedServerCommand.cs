using System.CommandLine;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using PeftSharp.Cli.Federated;
using PeftSharp.Federated;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Privacy;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp federated server</c>: runs federated LoRA rounds over HTTP for clients in other processes
/// (<c>peftsharp federated client</c>, or anything that speaks <see cref="FederatedProtocol"/> with PEFT's files).
/// Each round's aggregate is checkpointed atomically in --out; started again on the same --out, it resumes after the
/// last completed round. See docs/privacy.md.
/// </summary>
public static class FederatedServerCommand
{
    const string StateFile = "federated.json";

    public static Command Create()
    {
        var model = CliOptions.Model();
        var outDir = new Option<string>("--out") { Description = "output folder: round-N/ checkpoints, the final adapter; an existing run here is resumed", Required = true };
        var rounds = new Option<int>("--rounds") { DefaultValueFactory = _ => 10 }.AtLeast(1);
        var perRound = new Option<int>("--clients-per-round") { Description = "K: the first K clients to check in are selected for a round", DefaultValueFactory = _ => 2 }.AtLeast(1);
        var minClients = new Option<int>("--min-clients") { Description = "a round that closes with fewer reports stops the server", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var deadline = new Option<double>("--round-deadline") { Description = "seconds a round waits for uploads after its first client is selected", DefaultValueFactory = _ => 600 }.Above(0);
        var localSteps = new Option<int>("--local-steps") { DefaultValueFactory = _ => 10 }.AtLeast(1);
        var aggregation = new Option<string>("--aggregation") { Description = "fedavg (FedIT), ffa-lora (A frozen, exact) or svd (exact ΔW mean, refactored to rank r)", DefaultValueFactory = _ => "fedavg" };
        var r = new Option<int>("--r") { DefaultValueFactory = _ => 8 }.AtLeast(1);
        var alpha = new Option<double>("--alpha") { DefaultValueFactory = _ => 16 }.Above(0);
        var target = new Option<string?>("--target") { Description = "comma-separated target modules, or all-linear (default: PEFT's for the model type)" };
        var lr = new Option<double>("--lr") { Description = "the clients' learning rate", DefaultValueFactory = _ => 2e-3 }.Above(0);
        var batch = new Option<int>("--batch-size") { Description = "the clients' batch size", DefaultValueFactory = _ => 4 }.AtLeast(1);
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 42 }.AtLeast(0);
        var evalData = new Option<string?>("--eval-data") { Description = "held-out file: the global adapter's loss after every round" };
        var seqLen = new Option<int>("--seq-len") { Description = "for --eval-data", DefaultValueFactory = _ => 128 }.AtLeast(2);
        var dtype = CliOptions.DType();
        var dpClip = new Option<double?>("--dp-clip") { Description = "client-level DP: clip each client's update to this L2 norm" }.Above(0);
        var dpNoise = new Option<double?>("--dp-noise-multiplier") { Description = "client-level DP: noise σ (std σ·clip/K on the mean update)" }.Above(0);
        var dpDelta = new Option<double>("--dp-delta") { DefaultValueFactory = _ => 1e-5 }.InRange(0, 1, minInclusive: false, maxInclusive: false);
        var host = new Option<string>("--host") { Description = "address to listen on (loopback by default)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "port (0: any free port; the address is printed on stderr)", DefaultValueFactory = _ => 8470 }.InRange(0, 65535);
        var token = new Option<string?>("--token") { Description = $"shared secret clients must send as 'Authorization: Bearer TOKEN' (or set {FederatedProtocol.TokenVariable})" };
        var json = CliOptions.Json();
        var command = new Command("server", "federated LoRA server over HTTP: rounds of client check-ins, uploads and aggregation, checkpointed")
        {
            model, outDir, rounds, perRound, minClients, deadline, localSteps, aggregation, r, alpha, target, lr, batch, seed, evalData, seqLen, dtype,
            dpClip, dpNoise, dpDelta, host, port, token, json,
        };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var kind = LoraAggregation.Parse(parse.GetValue(aggregation)!);
            ClientLevelDp? dp = (parse.GetValue(dpClip), parse.GetValue(dpNoise)) switch
            {
                (null, null) => null,
                (double c, double s) => new ClientLevelDp(c, s),
                _ => throw new PeftSharpException("--dp-clip and --dp-noise-multiplier go together"),
            };
            var options = new FederatedServerOptions
            {
                Rounds = parse.GetValue(rounds), ClientsPerRound = parse.GetValue(perRound), MinClients = parse.GetValue(minClients),
                RoundDeadline = TimeSpan.FromSeconds(parse.GetValue(deadline)), LocalSteps = parse.GetValue(localSteps), Aggregation = kind,
                LearningRate = parse.GetValue(lr), BatchSize = parse.GetValue(batch), Seed = (ulong)parse.GetValue(seed), Dp = dp,
            };
            options.Validate();
            string modelDir = parse.GetValue(model)!, output = Path.GetFullPath(parse.GetValue(outDir)!);
            string? secret = parse.GetValue(token) ?? NullIfEmpty(Environment.GetEnvironmentVariable(FederatedProtocol.TokenVariable));
            string listenHost = parse.GetValue(host)!;
            if (secret is null && !IsLoopback(listenHost))
                Console.Error.WriteLine($"warning: --host {listenHost} without --token: anyone who reaches this port can take part");
            string aggName = kind.ToString().ToLowerInvariant();

            ModelConfig.Load(modelDir);
            var heldOut = new List<TrainingExample>();
            long pad = 0;
            if (parse.GetValue(evalData) is string evalPath)
            {
                if (!File.Exists(evalPath)) throw new PeftSharpException($"--eval-data {evalPath}: file not found");
                var tokenizer = ModelTokenizer.Load(modelDir);
                heldOut.AddRange(DataFiles.Load(evalPath, tokenizer, parse.GetValue(seqLen)).Examples);
                pad = tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;
            }

            var latest = RoundCheckpoint.Latest(output);
            if (latest is null && Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any())
                throw new PeftSharpException($"--out {output}: folder exists, is not empty and holds no federated run (round-N/); choose a new folder");
            using var causal = ModelLoader.Load(modelDir, CliOptions.ParseDType(parse.GetValue(dtype)!));
            LoraModel lora;
            int completed;
            if (latest is (int done, string dir))
            {
                string state = Path.Combine(output, StateFile);
                string? previous = File.Exists(state) ? JsonDocument.Parse(File.ReadAllText(state)).RootElement.GetProperty("aggregation").GetString() : null;
                if (previous is not null && previous != aggName)
                    throw new PeftSharpException($"--aggregation {aggName}: the run in {output} uses {previous}; resume it with the same aggregation or choose a new --out");
                lora = AdapterFiles.Load(causal, dir);
                completed = done;
                Console.Error.WriteLine($"resuming the run in {output} after round {done} ({dir})");
            }
            else
            {
                var config = new LoraConfig { R = parse.GetValue(r), LoraAlpha = parse.GetValue(alpha), BaseModelNameOrPath = modelDir };
                if (parse.GetValue(target) is string t) config.TargetModules = CliOptions.ParseTargets(t);
                lora = LoraModel.Create(causal, config, seed: (long)options.Seed);
                Directory.CreateDirectory(output);
                WriteText(Path.Combine(output, StateFile), JsonSerializer.Serialize(new { aggregation = aggName, base_model = modelDir, seed = options.Seed }) + "\n");
                RoundCheckpoint.Save(output, 0, lora, AdapterFiles.DefaultAdapter, modelDir, JsonSerializer.Serialize(new { round = 0, aggregation = aggName }));
                completed = 0;
                Console.Error.WriteLine(lora.ParameterReport());
            }
            AtomicDirectory.DeleteStale(output, RoundCheckpoint.Prefix);

            var results = new List<(int Round, double Loss)>();
            using var server = new FederatedServer(causal, lora, AdapterFiles.DefaultAdapter, output, modelDir, completed, options, heldOut, pad)
            {
                Log = line => Console.Error.WriteLine(line),
                OnRound = (result, dir) =>
                {
                    Console.Error.WriteLine($"round {result.Round}/{options.Rounds}: aggregated {result.Clients.Count} clients ({string.Join(", ", result.Clients)})" +
                        (double.IsFinite(result.EvalLoss) ? $"; held-out loss {result.EvalLoss:F4}" : "") +
                        $"; {result.BytesUp / 1024.0:F1} KiB up, {result.BytesDown / 1024.0:F1} KiB down; FedAvg inexactness {result.FedAvgInexactness:P2}; checkpoint {dir}");
                    WriteRoundsLog(output);
                },
            };
            long weightsBytes = new FileInfo(Path.Combine(FederatedServer.CheckpointDir(output, completed), AdapterFiles.WeightsFileName)).Length;
            long maxUpload = 2 * weightsBytes + 64 * 1024;
            int exit = 0;
            if (!server.Finished)
            {
                var (app, endpoints) = FederatedEndpoints.Build(server, listenHost, parse.GetValue(port), secret, maxUpload);
                app.StartAsync().GetAwaiter().GetResult();
                var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
                Console.Error.WriteLine($"federated server listening on {string.Join(", ", addresses)} ({options.Rounds} rounds, {options.ClientsPerRound} clients per round, " +
                                        $"deadline {options.RoundDeadline.TotalSeconds:G4} s, aggregation {aggName}{(secret is null ? "" : ", token required")})");
                var stopping = app.Lifetime.ApplicationStopping;
                try
                {
                    server.RunAsync(stopping).GetAwaiter().GetResult();
                    // Tell the last round's clients that everything is done before going away (at most a few seconds).
                    var last = RoundCheckpoint.Latest(output);
                    var waitFor = last is null ? [] : JsonDocument.Parse(File.ReadAllText(Path.Combine(last.Value.Dir, RoundCheckpoint.InfoFile))).RootElement
                        .GetProperty("clients").EnumerateArray().Select(c => c.GetProperty("name").GetString()!).ToList();
                    var until = DateTime.UtcNow.AddSeconds(5);
                    while (DateTime.UtcNow < until && !waitFor.All(endpoints.ToldDone.ContainsKey)) Thread.Sleep(100);
                }
                catch (OperationCanceledException)
                {
                    Console.Error.WriteLine($"stopped after round {server.CompletedRounds}; start the server again with --out {output} to resume");
                    exit = 130;
                }
                finally
                {
                    app.StopAsync().GetAwaiter().GetResult();
                    app.DisposeAsync().AsTask().GetAwaiter().GetResult();
                }
                if (exit != 0) return exit;
            }
            else Console.Error.WriteLine($"all {options.Rounds} rounds are done in {output}");

            AdapterFiles.Save(lora, output, AdapterFiles.DefaultAdapter, modelDir);
            var log = WriteRoundsLog(output);
            var losses = log.Select(j => j.TryGetProperty("eval_loss", out var l) && l.ValueKind == JsonValueKind.Number ? l.GetDouble() : double.NaN).ToArray();
            string? plot = null;
            if (losses.Any(double.IsFinite))
            {
                plot = Path.Combine(output, "loss.png");
                FederatedCommand.SavePlot(log.Select((j, i) => (j.GetProperty("round").GetInt32(), losses[i])).ToList(), plot, aggName);
            }
            double? epsilon = dp is null ? null : RdpAccountant.Epsilon(1.0, dp.NoiseMultiplier, options.Rounds, parse.GetValue(dpDelta)).Epsilon;
            Console.WriteLine($"done: {options.Rounds} rounds, final adapter in {output}" + (plot is null ? "" : $", plot {plot}") +
                              (epsilon is double e ? $", client-level ε = {e:G4} at δ = {parse.GetValue(dpDelta):G3} (no sampling amplification)" : ""));
            if (parse.GetValue(json))
                JsonOutput.Write(new
                {
                    aggregation = aggName, rounds = options.Rounds, resumed_after = latest?.Round,
                    clients = log.Select(j => j.GetProperty("clients").EnumerateArray().Select(c => c.GetProperty("name").GetString()).ToArray()).ToArray(),
                    eval_loss = losses.Select(l => double.IsFinite(l) ? l : (double?)null).ToArray(),
                    bytes_per_round = log.Select(j => j.GetProperty("bytes_up").GetInt64() + j.GetProperty("bytes_down").GetInt64()).ToArray(),
                    fedavg_inexactness = log.Select(j => j.GetProperty("fedavg_inexactness").GetDouble()).ToArray(),
                    epsilon, adapter_dir = output, plot,
                });
            return 0;
        }));
        return command;
    }

    /// <summary>rounds.jsonl from every round-N/round.json (N ≥ 1), rewritten atomically; returns the records in round order.</summary>
    static List<JsonElement> WriteRoundsLog(string output)
    {
        var records = new List<(int Round, JsonElement Json)>();
        for (int n = 1; Directory.Exists(FederatedServer.CheckpointDir(output, n)); n++)
        {
            string info = Path.Combine(FederatedServer.CheckpointDir(output, n), RoundCheckpoint.InfoFile);
            if (!File.Exists(info)) break;
            records.Add((n, JsonDocument.Parse(File.ReadAllText(info)).RootElement.Clone()));
        }
        WriteText(Path.Combine(output, "rounds.jsonl"), string.Concat(records.Select(r => r.Json.GetRawText() + "\n")));
        return records.Select(x => x.Json).ToList();
    }

    /// <summary>A temporary file renamed over the target: readers see the old file or the new one, never half of one.</summary>
    static void WriteText(string path, string text)
    {
        string temporary = path + ".tmp-" + Guid.NewGuid().ToString("N");
        File.WriteAllText(temporary, text);
        File.Move(temporary, path, overwrite: true);
    }

    static bool IsLoopback(string host) =>
        host is "localhost" || (System.Net.IPAddress.TryParse(host, out var ip) && System.Net.IPAddress.IsLoopback(ip));

    static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;
}
