using System.Diagnostics;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Federated;

/// <summary>One client of a simulation: a name (its data file) and its training examples.</summary>
public sealed record FederatedClient(string Name, IReadOnlyList<TrainingExample> Train);

/// <summary>How a federated run goes.</summary>
public sealed record FederatedOptions
{
    /// <summary>Communication rounds (default 10).</summary>
    public int Rounds { get; init; } = 10;
    /// <summary>Clients sampled (without replacement) each round (default 2); at most the number of clients.</summary>
    public int ClientsPerRound { get; init; } = 2;
    /// <summary>Optimizer steps each selected client makes per round, starting from the round's global adapter.</summary>
    public int LocalSteps { get; init; } = 10;
    /// <summary>How client factors are combined into the global adapter (default FedAvg).</summary>
    public AggregationKind Aggregation { get; init; } = AggregationKind.FedAvg;
    /// <summary>AdamW learning rate of each client's local steps (default 2e-3).</summary>
    public double LearningRate { get; init; } = 2e-3;
    /// <summary>Examples per local step (default 4).</summary>
    public int BatchSize { get; init; } = 4;
    /// <summary>Seed of client sampling, batch order and any DP noise, so runs repeat.</summary>
    public ulong Seed { get; init; } = 42;
    /// <summary>Client-level DP on the aggregate (FedAvg and FFA-LoRA); null: none.</summary>
    public ClientLevelDp? Dp { get; init; }

    /// <summary>Checks the options against the number of clients.</summary>
    /// <exception cref="PeftSharpException">A value is out of range; the message names the CLI option.</exception>
    public void Validate(int clients)
    {
        if (Rounds < 1) throw new PeftSharpException($"--rounds: expected at least 1, got {Rounds}");
        if (ClientsPerRound < 1 || ClientsPerRound > clients) throw new PeftSharpException($"--clients-per-round: expected 1..{clients} (the number of clients), got {ClientsPerRound}");
        if (LocalSteps < 1) throw new PeftSharpException($"--local-steps: expected at least 1, got {LocalSteps}");
        if (BatchSize < 1) throw new PeftSharpException($"--batch-size: expected at least 1, got {BatchSize}");
        if (Dp is not null && Aggregation == AggregationKind.Svd) throw new PeftSharpException("--dp-clip: client-level DP works with --aggregation fedavg or ffa-lora, not svd");
    }
}

/// <summary>What one round did.</summary>
/// <param name="BytesUp">Bytes the selected clients sent (their factors as float32: A and B, or B only for FFA-LoRA).</param>
/// <param name="BytesDown">Bytes the server sent them (the global adapter, the same factors).</param>
/// <param name="FedAvgInexactness">‖mean(B)·mean(A) − mean(B·A)‖/‖mean(B·A)‖ of this round's client factors (0 for FFA-LoRA by construction).</param>
public sealed record RoundResult(int Round, IReadOnlyList<string> Clients, double EvalLoss, long BytesUp, long BytesDown,
                                 double FedAvgInexactness, double Seconds);

/// <summary>
/// Federated LoRA in one process: each round, K clients (drawn without replacement, seeded per round) start from the
/// global adapter, train it locally for S steps on their own data (AdamW, state reset each round, as FedIT), and the
/// server aggregates their factors (<see cref="LoraAggregation"/>), optionally with client-level DP
/// (<see cref="ClientLevelDp"/>). The global held-out loss is measured after every round.
/// </summary>
public sealed class FederatedSimulation
{
    readonly CausalLM model;
    readonly LoraModel lora;
    readonly string adapter;
    readonly IReadOnlyList<FederatedClient> clients;
    readonly IReadOnlyList<TrainingExample> heldOut;
    readonly long padTokenId;
    readonly FederatedOptions options;

    /// <summary>
    /// A simulation on <paramref name="model"/> whose LoRA adapter <paramref name="adapter"/> (in <paramref name="lora"/>) is the global adapter; <paramref name="heldOut"/> is the evaluation set, <paramref name="padTokenId"/> pads batches.
    /// </summary>
    /// <exception cref="PeftSharpException">Invalid options, or a client without training examples.</exception>
    public FederatedSimulation(CausalLM model, LoraModel lora, string adapter, IReadOnlyList<FederatedClient> clients,
                               IReadOnlyList<TrainingExample> heldOut, long padTokenId, FederatedOptions options)
    {
        options.Validate(clients.Count);
        foreach (var c in clients)
            if (c.Train.Count == 0) throw new PeftSharpException($"client {c.Name}: no training examples");
        (this.model, this.lora, this.adapter, this.clients, this.heldOut, this.padTokenId, this.options) = (model, lora, adapter, clients, heldOut, padTokenId, options);
        var settings = lora.LinearLayers.Values.First(l => l.Adapters.ContainsKey(adapter)).Adapters[adapter];
        Scaling = settings.Scaling;
        Rank = settings.Rank;
        // FFA-LoRA: A stays at its (shared, seeded) initialisation on every client.
        if (options.Aggregation == AggregationKind.FfaLora)
            foreach (var layer in lora.LinearLayers.Values) layer.A(adapter).weight.requires_grad = false;
    }

    /// <summary>The adapter's scaling (lora_alpha / r, or / √r with rsLoRA).</summary>
    public double Scaling { get; }
    /// <summary>The adapter's rank r.</summary>
    public int Rank { get; }

    /// <summary>Called after each round with its result and the new global adapter (e.g. to checkpoint it).</summary>
    public Action<RoundResult, LoraFactors>? OnRound { get; init; }

    /// <summary>Called with each client's progress lines (client name, step, loss).</summary>
    public Action<string>? Log { get; init; }

    /// <summary>Held-out loss of the model with the adapter as it is now.</summary>
    public double HeldOutLoss() => ValidationLoss.Mean(model, heldOut, padTokenId, options.BatchSize);

    /// <summary>The clients of round <paramref name="round"/> (1-based): a seeded draw, the same on every run.</summary>
    public IReadOnlyList<FederatedClient> Selected(int round) =>
        SeededShuffle.Permutation(clients.Count, SeededShuffle.EpochSeed(options.Seed, round)).Take(options.ClientsPerRound).Select(i => clients[i]).ToList();

    /// <summary>One client's local training from <paramref name="global"/>; the model's adapter is left at the result.</summary>
    public ClientUpdate TrainClient(FederatedClient client, LoraFactors global, int round, int index)
    {
        global.WriteTo(lora, adapter);
        var result = TrainLocally(model, lora, client.Train, padTokenId, options.LocalSteps, options.LearningRate, options.BatchSize,
                                  options.Seed + (ulong)(round * 1000 + index));
        Log?.Invoke($"  round {round} client {client.Name}: {result.Steps} local steps, train loss {result.LastLoss:F4}");
        return new ClientUpdate(client.Name, LoraFactors.Read(lora, adapter), client.Train.Count);
    }

    /// <summary>
    /// A client's local training of a round: <paramref name="steps"/> AdamW steps (fresh optimizer state, constant learning
    /// rate, no weight decay) on the LoRA model's trainable parameters, from whatever adapter it holds now.
    /// </summary>
    public static TrainingResult TrainLocally(CausalLM model, LoraModel lora, IReadOnlyList<TrainingExample> examples, long padTokenId,
                                              int steps, double learningRate, int batchSize, ulong seed)
    {
        var trainingOptions = new TrainingOptions
        {
            MaxSteps = steps, BatchSize = batchSize, Schedule = ScheduleKind.Constant, Seed = seed, LoggingSteps = steps,
        };
        using var trainer = new Trainer(model, ParameterGroups.DecayAndNoDecay(lora.TrainableParameters(), learningRate, 0), trainingOptions, examples, null, padTokenId);
        return trainer.Train();
    }

    /// <summary>Runs rounds <paramref name="firstRound"/>..Rounds from <paramref name="global"/> (disposed by the caller); returns the final global adapter.</summary>
    public LoraFactors Run(LoraFactors global, int firstRound = 1)
    {
        bool onlyB = options.Aggregation == AggregationKind.FfaLora;
        var generator = new Generator().manual_seed((long)options.Seed + firstRound);
        var current = global.Clone();
        for (int round = firstRound; round <= options.Rounds; round++)
        {
            var clock = Stopwatch.StartNew();
            var updates = Selected(round).Select((c, i) => TrainClient(c, current, round, i)).ToList();
            double inexact = LoraAggregation.FedAvgInexactness(updates);
            var next = options.Dp is { } dp
                ? dp.Aggregate(current, updates, onlyB, generator)
                : LoraAggregation.Aggregate(options.Aggregation, updates, Scaling, Rank);
            long bytes = current.Bytes(onlyB);
            foreach (var u in updates) u.Factors.Dispose();
            current.Dispose();
            current = next;
            current.WriteTo(lora, adapter);
            var result = new RoundResult(round, updates.Select(u => u.Client).ToList(), HeldOutLoss(), bytes * updates.Count, bytes * updates.Count,
                                         inexact, clock.Elapsed.TotalSeconds);
            OnRound?.Invoke(result, current);
        }
        return current;
    }
}
