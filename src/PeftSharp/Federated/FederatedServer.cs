using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Federated;

/// <summary>How a federated server runs its rounds (what it tells the clients, and when a round closes).</summary>
public sealed record FederatedServerOptions
{
    /// <summary>Number of rounds R to run.</summary>
    public int Rounds { get; init; } = 10;
    /// <summary>K: the first K distinct clients to check in are selected for a round.</summary>
    public int ClientsPerRound { get; init; } = 2;
    /// <summary>A round that closes with fewer reports than this stops the server (its checkpoints stay for a restart).</summary>
    public int MinClients { get; init; } = 1;
    /// <summary>Local training steps S each selected client runs per round.</summary>
    public int LocalSteps { get; init; } = 10;
    /// <summary>Learning rate the clients use.</summary>
    public double LearningRate { get; init; } = 2e-3;
    /// <summary>Batch size the clients use.</summary>
    public int BatchSize { get; init; } = 4;
    /// <summary>Seed of the initial adapter and of the clients' data order.</summary>
    public ulong Seed { get; init; } = 42;
    /// <summary>How uploads are combined: FedAvg, FFA-LoRA or SVD re-factoring.</summary>
    public AggregationKind Aggregation { get; init; } = AggregationKind.FedAvg;
    /// <summary>Client-level differential privacy on the aggregate (clipping and noise), or null for none.</summary>
    public ClientLevelDp? Dp { get; init; }
    /// <summary>How long a round waits for uploads, counted from its first selected client.</summary>
    public TimeSpan RoundDeadline { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Checks every value; a bad one is a <see cref="PeftSharpException"/> naming its flag.</summary>
    public void Validate()
    {
        if (Rounds < 1) throw new PeftSharpException($"--rounds: expected at least 1, got {Rounds}");
        if (ClientsPerRound < 1) throw new PeftSharpException($"--clients-per-round: expected at least 1, got {ClientsPerRound}");
        if (MinClients < 1 || MinClients > ClientsPerRound)
            throw new PeftSharpException($"--min-clients: expected 1..{ClientsPerRound} (--clients-per-round), got {MinClients}");
        if (LocalSteps < 1) throw new PeftSharpException($"--local-steps: expected at least 1, got {LocalSteps}");
        if (BatchSize < 1) throw new PeftSharpException($"--batch-size: expected at least 1, got {BatchSize}");
        if (!(RoundDeadline > TimeSpan.Zero)) throw new PeftSharpException($"--round-deadline: expected a positive number of seconds, got {RoundDeadline.TotalSeconds}");
        if (Dp is not null && Aggregation == AggregationKind.Svd) throw new PeftSharpException("--dp-clip: client-level DP works with --aggregation fedavg or ffa-lora, not svd");
    }
}

/// <summary>The answer to a check-in: what to do, and for Train the round's local-training settings.</summary>
public sealed record CheckInReply(CheckInStatus Status, int Round, int LocalSteps, double LearningRate, int BatchSize, ulong Seed,
                                  bool FreezeLoraA, double SecondsLeft);

/// <summary>
/// The server side of federated LoRA, independent of the transport (the CLI puts HTTP in front of it): runs rounds
/// <c>CompletedRounds+1 .. Rounds</c>; in each, clients check in (<see cref="RoundCoordinator"/>: first K, a deadline),
/// fetch the global adapter of the previous round's checkpoint (<see cref="StartAdapterDir"/>), and upload their
/// trained adapter with their sample count (<see cref="Upload"/>). The reports are aggregated
/// (<see cref="LoraAggregation"/>, optionally <see cref="ClientLevelDp"/>), and the new global adapter is checkpointed
/// atomically as <c>round-N/</c> with the uploads it was made from, so a restarted server resumes after the last
/// completed round.
/// </summary>
public sealed class FederatedServer : IDisposable
{
    readonly CausalLM model;
    readonly LoraModel lora;
    readonly string adapter, outputDir, uploads;
    readonly string? baseModel;
    readonly IReadOnlyList<TrainingExample> heldOut;
    readonly long padTokenId;
    readonly object globalGate = new();
    LoraFactors global;
    volatile RoundCoordinator? current;
    long uploadCounter;

    /// <param name="completedRounds">The round whose checkpoint <paramref name="lora"/> holds now (0: the initial adapter, saved as <c>round-0/</c>).</param>
    public FederatedServer(CausalLM model, LoraModel lora, string adapter, string outputDir, string? baseModel, int completedRounds,
                           FederatedServerOptions options, IReadOnlyList<TrainingExample> heldOut, long padTokenId)
    {
        options.Validate();
        (this.model, this.lora, this.adapter, this.outputDir, this.baseModel, this.heldOut, this.padTokenId, Options) =
            (model, lora, adapter, outputDir, baseModel, heldOut, padTokenId, options);
        CompletedRounds = completedRounds;
        var settings = lora.LinearLayers.Values.First(l => l.Adapters.ContainsKey(adapter)).Adapters[adapter];
        (Scaling, Rank) = (settings.Scaling, settings.Rank);
        global = LoraFactors.Read(lora, adapter);
        uploads = Path.Combine(outputDir, ".uploads");
        if (Directory.Exists(uploads)) Directory.Delete(uploads, recursive: true); // unfinished uploads of a stopped server
        Directory.CreateDirectory(uploads);
    }

    /// <summary>The options the server runs with.</summary>
    public FederatedServerOptions Options { get; }
    /// <summary>The LoRA scaling (lora_alpha / r) of the shared adapter.</summary>
    public double Scaling { get; }
    /// <summary>The LoRA rank r of the shared adapter.</summary>
    public int Rank { get; }
    /// <summary>Rounds aggregated and checkpointed so far (also after a resume).</summary>
    public int CompletedRounds { get; private set; }
    /// <summary>True once every round is done.</summary>
    public bool Finished => CompletedRounds >= Options.Rounds;
    /// <summary>The open round, or null between rounds and after the last.</summary>
    public RoundCoordinator? Current => current;

    /// <summary>Receives progress lines (the command prints them on stderr).</summary>
    public Action<string>? Log { get; init; }
    /// <summary>Called after each round is checkpointed, with its result and checkpoint folder.</summary>
    public Action<RoundResult, string>? OnRound { get; init; }

    /// <summary>The checkpoint folder of round <paramref name="round"/> (<c>round-N</c>; round 0 is the initial adapter).</summary>
    public static string CheckpointDir(string outputDir, int round) => Path.Combine(outputDir, $"{RoundCheckpoint.Prefix}{round}");

    /// <summary>The folder (PEFT format) round <paramref name="round"/> starts from, if that round is open now; else null.</summary>
    public string? StartAdapterDir(int round) => current is { } c && c.Round == round ? CheckpointDir(outputDir, round - 1) : null;

    /// <summary>A client asks for work: selected for the open round, told to wait, or told that all rounds are done.</summary>
    public CheckInReply CheckIn(string client)
    {
        if (Finished) return Reply(CheckInStatus.Done, CompletedRounds, 0, 0);
        if (current is not { } round) return Reply(CheckInStatus.Wait, CompletedRounds + 1, 0, 0);
        var (status, index) = round.CheckIn(client);
        return Reply(status, round.Round, index, round.SecondsLeft);
    }

    CheckInReply Reply(CheckInStatus status, int round, int index, double secondsLeft) =>
        new(status, round, Options.LocalSteps, Options.LearningRate, Options.BatchSize, Options.Seed + (ulong)(round * 1000 + Math.Max(index, 0)),
            Options.Aggregation == AggregationKind.FfaLora, secondsLeft);

    /// <summary>A fresh path for an upload's bytes (in <c>OUT/.uploads/</c>); pass it to <see cref="Upload"/> once written.</summary>
    public string NewUploadPath() => Path.Combine(uploads, $"upload-{Interlocked.Increment(ref uploadCounter)}.safetensors");

    /// <summary>
    /// Validates an uploaded adapter file against the global adapter and records it for the round. Bad content is a
    /// <see cref="PeftSharpException"/> (the file is deleted); a refusal for the round's state is the outcome.
    /// </summary>
    public ReportOutcome Upload(int round, string client, long samples, string file)
    {
        string label = $"client {client}, round {round}";
        try
        {
            if (samples < 1) throw new PeftSharpException($"{label}: samples: expected at least 1, got {samples}");
            if (current is not { } open || open.Round != round) { File.Delete(file); return ReportOutcome.WrongRound; }
            LoraFactors factors;
            lock (globalGate)
            {
                factors = AdapterUpload.Read(file, global, label);
                if (Options.Aggregation == AggregationKind.FfaLora)
                    foreach (var (path, (a, _)) in factors.Layers)
                        if (!a.allclose(global.Layers[path].A, rtol: 0, atol: 0))
                        {
                            factors.Dispose();
                            throw new PeftSharpException($"{label}: lora_A of {path} differs from the global adapter's; FFA-LoRA keeps A frozen");
                        }
            }
            var outcome = open.Report(round, new ClientUpdate(client, factors, samples), file);
            if (outcome != ReportOutcome.Accepted)
            {
                factors.Dispose();
                File.Delete(file);
            }
            return outcome;
        }
        catch
        {
            File.Delete(file);
            throw;
        }
    }

    /// <summary>Runs the remaining rounds. Throws <see cref="PeftSharpException"/> when a round closes with too few reports.</summary>
    public async Task RunAsync(CancellationToken cancellationToken = default)
    {
        bool onlyB = Options.Aggregation == AggregationKind.FfaLora;
        while (!Finished)
        {
            int round = CompletedRounds + 1;
            var coordinator = new RoundCoordinator(round, Options.ClientsPerRound, Options.RoundDeadline);
            current = coordinator;
            Log?.Invoke($"round {round}/{Options.Rounds}: open for {Options.ClientsPerRound} clients");
            var reports = await coordinator.CloseAsync(cancellationToken);
            var clock = Stopwatch.StartNew();
            current = null;
            try
            {
                if (reports.Count < Options.MinClients)
                    throw new PeftSharpException(
                        $"round {round}: {reports.Count} of the selected clients ({string.Join(", ", coordinator.Selected)}) reported within --round-deadline " +
                        $"{Options.RoundDeadline.TotalSeconds:G4} s, fewer than --min-clients {Options.MinClients}; the last completed round is {round - 1} " +
                        $"in {outputDir} (start the server again to resume from it)");
                var updates = reports.Select(r => r.Update).ToList();
                double inexact = LoraAggregation.FedAvgInexactness(updates);
                LoraFactors next;
                using (var generator = new Generator().manual_seed((long)Options.Seed + round))
                    next = Options.Dp is { } dp ? dp.Aggregate(global, updates, onlyB, generator) : LoraAggregation.Aggregate(Options.Aggregation, updates, Scaling, Rank);
                next.WriteTo(lora, adapter);
                lock (globalGate)
                {
                    global.Dispose();
                    global = next;
                }
                double loss = ValidationLoss.Mean(model, heldOut, padTokenId, Options.BatchSize);
                long up = reports.Sum(r => new FileInfo(r.File).Length);
                long down = coordinator.Selected.Count * new FileInfo(Path.Combine(CheckpointDir(outputDir, round - 1), Peft.AdapterFiles.WeightsFileName)).Length;
                var result = new RoundResult(round, updates.Select(u => u.Client).ToList(), loss, up, down, inexact, clock.Elapsed.TotalSeconds);
                string json = JsonSerializer.Serialize(new
                {
                    round, aggregation = Options.Aggregation.ToString().ToLowerInvariant(),
                    clients = reports.Select(r => new { name = r.Update.Client, samples = r.Update.Samples }).ToArray(),
                    selected = coordinator.Selected, eval_loss = double.IsFinite(loss) ? loss : (double?)null, bytes_up = up, bytes_down = down,
                    fedavg_inexactness = inexact,
                });
                string dir = RoundCheckpoint.Save(outputDir, round, lora, adapter, baseModel, json, d =>
                {
                    string clients = Path.Combine(d, "clients");
                    Directory.CreateDirectory(clients);
                    foreach (var (update, file) in reports) File.Copy(file, Path.Combine(clients, update.Client + ".safetensors"));
                });
                CompletedRounds = round;
                OnRound?.Invoke(result, dir);
            }
            finally
            {
                foreach (var (update, file) in reports)
                {
                    update.Factors.Dispose();
                    File.Delete(file);
                }
            }
        }
    }

    /// <summary>Stops waiting rounds and releases the server's resources.</summary>
    public void Dispose()
    {
        lock (globalGate) global.Dispose();
    }
}
