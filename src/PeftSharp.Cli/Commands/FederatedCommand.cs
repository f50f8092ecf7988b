using System.CommandLine;
using System.Text.Json;
using PeftSharp.Federated;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Privacy;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp federated simulate</c>: federated LoRA in one process — clients (one data file each in --clients)
/// fine-tune the global adapter locally, the server aggregates (fedavg, ffa-lora or svd), repeat. Writes every
/// round's global adapter in PEFT's format (round-N/, atomically), rounds.jsonl, loss.png and the final adapter.
/// </summary>
public static class FederatedCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var clients = new Option<string>("--clients") { Description = "folder with one training file per client (.txt or .jsonl)", Required = true };
        var rounds = new Option<int>("--rounds") { DefaultValueFactory = _ => 10 }.AtLeast(1);
        var perRound = new Option<int>("--clients-per-round") { DefaultValueFactory = _ => 2 }.AtLeast(1);
        var localSteps = new Option<int>("--local-steps") { DefaultValueFactory = _ => 10 }.AtLeast(1);
        var aggregation = new Option<string>("--aggregation") { Description = "fedavg (FedIT), ffa-lora (A frozen, exact) or svd (exact ΔW mean, refactored to rank r)", DefaultValueFactory = _ => "fedavg" };
        var method = new Option<string>("--method") { Description = "adapter method (lora)", DefaultValueFactory = _ => "lora" };
        var outDir = new Option<string>("--out") { Description = "output folder", Required = true };
        var evalData = new Option<string?>("--eval-data") { Description = "global held-out file (default: 10% of every client's data)" };
        var r = new Option<int>("--r") { DefaultValueFactory = _ => 8 }.AtLeast(1);
        var alpha = new Option<double>("--alpha") { DefaultValueFactory = _ => 16 }.Above(0);
        var target = new Option<string?>("--target") { Description = "comma-separated target modules, or all-linear (default: PEFT's for the model type)" };
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => 2e-3 }.Above(0);
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 4 }.AtLeast(1);
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 128 }.AtLeast(2);
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 42 }.AtLeast(0);
        var dtype = CliOptions.DType();
        var dpClip = new Option<double?>("--dp-clip") { Description = "client-level DP: clip each client's update to this L2 norm" }.Above(0);
        var dpNoise = new Option<double?>("--dp-noise-multiplier") { Description = "client-level DP: noise σ (std σ·clip/K on the mean update)" }.Above(0);
        var dpDelta = new Option<double>("--dp-delta") { DefaultValueFactory = _ => 1e-5 }.InRange(0, 1, minInclusive: false, maxInclusive: false);
        var json = CliOptions.Json();
        var simulate = new Command("simulate", "federated LoRA across clients in one process: rounds of local training and aggregation")
        {
            model, clients, rounds, perRound, localSteps, aggregation, method, outDir, evalData, r, alpha, target, lr, batch, seqLen, seed, dtype,
            dpClip, dpNoise, dpDelta, json,
        };
        simulate.SetAction(parse => CliErrors.Run(() =>
        {
            string m = parse.GetValue(method)!.ToLowerInvariant();
            if (m != "lora") throw new PeftSharpException($"--method: federated simulation supports lora, got \"{m}\"");
            var kind = LoraAggregation.Parse(parse.GetValue(aggregation)!);
            ClientLevelDp? dp = (parse.GetValue(dpClip), parse.GetValue(dpNoise)) switch
            {
                (null, null) => null,
                (double c, double s) => new ClientLevelDp(c, s),
                _ => throw new PeftSharpException("--dp-clip and --dp-noise-multiplier go together"),
            };
            string modelDir = parse.GetValue(model)!, clientDir = parse.GetValue(clients)!, output = parse.GetValue(outDir)!;
            if (!Directory.Exists(clientDir)) throw new PeftSharpException($"--clients {clientDir}: folder not found");
            var files = Directory.EnumerateFiles(clientDir).Where(f => f.EndsWith(".txt") || f.EndsWith(".jsonl")).Order(StringComparer.Ordinal).ToList();
            if (files.Count == 0) throw new PeftSharpException($"--clients {clientDir}: no .txt or .jsonl client files");
            if (Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any())
                throw new PeftSharpException($"--out {output}: folder exists and is not empty; choose a new folder");
            ModelConfig.Load(modelDir);
            var tokenizer = ModelTokenizer.Load(modelDir);
            int len = parse.GetValue(seqLen);
            ulong s0 = (ulong)parse.GetValue(seed);
            var federated = new List<FederatedClient>();
            var heldOut = new List<TrainingExample>();
            string? evalPath = parse.GetValue(evalData);
            foreach (var f in files)
            {
                if (new FileInfo(f).Length == 0) throw new PeftSharpException($"client file {f}: empty (expected training text or JSONL records)");
                var examples = DataFiles.Load(f, tokenizer, len).Examples;
                if (examples.Count == 0) throw new PeftSharpException($"client file {f}: no training examples");
                if (evalPath is null && examples.Count >= 2)
                {
                    var (train, val) = DataFiles.Split(examples, 0.1, s0);
                    heldOut.AddRange(val);
                    examples = train;
                }
                federated.Add(new FederatedClient(Path.GetFileNameWithoutExtension(f), examples));
            }
            if (evalPath is not null)
            {
                if (!File.Exists(evalPath)) throw new PeftSharpException($"--eval-data {evalPath}: file not found");
                heldOut.AddRange(DataFiles.Load(evalPath, tokenizer, len).Examples);
            }
            var options = new FederatedOptions
            {
                Rounds = parse.GetValue(rounds), ClientsPerRound = parse.GetValue(perRound), LocalSteps = parse.GetValue(localSteps),
                Aggregation = kind, LearningRate = parse.GetValue(lr), BatchSize = parse.GetValue(batch), Seed = s0, Dp = dp,
            };
            options.Validate(federated.Count);

            using var causal = ModelLoader.Load(modelDir, CliOptions.ParseDType(parse.GetValue(dtype)!));
            var config = new LoraConfig { R = parse.GetValue(r), LoraAlpha = parse.GetValue(alpha), BaseModelNameOrPath = modelDir };
            if (parse.GetValue(target) is string t) config.TargetModules = CliOptions.ParseTargets(t);
            var lora = LoraModel.Create(causal, config, seed: (long)s0);
            Console.Error.WriteLine(lora.ParameterReport());
            long pad = tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;
            Directory.CreateDirectory(output);
            string log = Path.Combine(output, "rounds.jsonl");
            var evalLosses = new List<(int Round, double Loss)>();
            var results = new List<RoundResult>();
            var sim = new FederatedSimulation(causal, lora, AdapterFiles.DefaultAdapter, federated, heldOut, pad, options)
            {
                Log = line => Console.Error.WriteLine(line),
                OnRound = (result, global) =>
                {
                    results.Add(result);
                    evalLosses.Add((result.Round, result.EvalLoss));
                    RoundCheckpoint.Save(output, result.Round, lora, AdapterFiles.DefaultAdapter, modelDir, JsonSerializer.Serialize(RoundJson(result)));
                    File.AppendAllText(log, JsonSerializer.Serialize(RoundJson(result)) + "\n");
                    Console.Error.WriteLine($"round {result.Round}/{options.Rounds}: clients {string.Join(", ", result.Clients)}; held-out loss {result.EvalLoss:F4}; " +
                        $"sent {result.BytesUp / 1024.0:F1} KiB up, {result.BytesDown / 1024.0:F1} KiB down; FedAvg inexactness {result.FedAvgInexactness:P2}; {result.Seconds:F1} s");
                },
            };
            double initial = sim.HeldOutLoss();
            evalLosses.Add((0, initial));
            Console.Error.WriteLine($"round 0: held-out loss {initial:F4} ({federated.Count} clients, {heldOut.Count} held-out examples, aggregation {parse.GetValue(aggregation)})");
            using var start = LoraFactors.Read(lora, AdapterFiles.DefaultAdapter);
            using var final = sim.Run(start);
            AdapterFiles.Save(lora, output, AdapterFiles.DefaultAdapter, modelDir);
            string plot = Path.Combine(output, "loss.png");
            SavePlot(evalLosses, plot, parse.GetValue(aggregation)!);
            double? epsilon = dp is null ? null
                : RdpAccountant.Epsilon((double)options.ClientsPerRound / federated.Count, dp.NoiseMultiplier, options.Rounds, parse.GetValue(dpDelta)).Epsilon;
            Console.WriteLine($"done: {options.Rounds} rounds, held-out loss {initial:F4} → {results[^1].EvalLoss:F4}, adapter in {output}, plot {plot}" +
                              (epsilon is double e ? $", client-level ε = {e:G4} at δ = {parse.GetValue(dpDelta):G3}" : ""));
            if (parse.GetValue(json))
                JsonOutput.Write(new
                {
                    aggregation = parse.GetValue(aggregation), rounds = options.Rounds, initial_eval_loss = initial, final_eval_loss = results[^1].EvalLoss,
                    eval_loss = results.Select(x => x.EvalLoss).ToArray(), bytes_per_round = results.Select(x => x.BytesUp + x.BytesDown).ToArray(),
                    fedavg_inexactness = results.Select(x => x.FedAvgInexactness).ToArray(), epsilon, adapter_dir = output, plot,
                });
            return 0;
        }));
        return new Command("federated", "federated LoRA: clients train locally, a server aggregates adapters")
        {
            simulate, FederatedServerCommand.Create(), FederatedClientCommand.Create(),
        };
    }

    static object RoundJson(RoundResult r) => new
    {
        round = r.Round, clients = r.Clients, eval_loss = r.EvalLoss, bytes_up = r.BytesUp, bytes_down = r.BytesDown,
        fedavg_inexactness = r.FedAvgInexactness, seconds = r.Seconds,
    };

    internal static void SavePlot(List<(int Round, double Loss)> losses, string path, string aggregation)
    {
        var plot = new ScottPlot.Plot();
        var points = losses.Where(l => double.IsFinite(l.Loss)).ToList();
        var line = plot.Add.Scatter(points.Select(p => (double)p.Round).ToArray(), points.Select(p => p.Loss).ToArray());
        line.LegendText = $"global held-out loss ({aggregation})";
        plot.Title("Federated LoRA: held-out loss per round");
        plot.XLabel("round");
        plot.YLabel("mean token cross-entropy");
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.SavePng(path, 900, 540);
    }
}
