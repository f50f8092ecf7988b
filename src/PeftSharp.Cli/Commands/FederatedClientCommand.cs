using System.CommandLine;
using PeftSharp.Cli.Federated;
using PeftSharp.Federated;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp federated client</c>: takes part in a federated server's rounds with its own data file, which never
/// leaves the machine: check in; when selected, download the global adapter (PEFT's files), train it for the round's
/// local steps, upload the trained adapter_model.safetensors and the number of examples; until the server says done.
/// </summary>
public static class FederatedClientCommand
{
    public static Command Create()
    {
        var serverUrl = new Option<string>("--server") { Description = "the federated server's address", DefaultValueFactory = _ => "http://127.0.0.1:8470" };
        var model = CliOptions.Model();
        var data = new Option<string>("--data") { Description = "this client's training file (.txt or .jsonl, read as train --data reads it)", Required = true };
        var name = new Option<string?>("--name") { Description = "this client's name (default: the data file's name without extension)" };
        var token = new Option<string?>("--token") { Description = $"the server's shared secret (or set {FederatedProtocol.TokenVariable})" };
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 128 }.AtLeast(2);
        var dtype = CliOptions.DType();
        var outDir = new Option<string?>("--out") { Description = "keep this client's last trained adapter here (PEFT's format)" };
        var unreachable = new Option<double>("--connect-timeout") { Description = "seconds to keep retrying a server that does not answer", DefaultValueFactory = _ => 60 }.Above(0);
        var json = CliOptions.Json();
        var command = new Command("client", "federated LoRA client: trains the server's global adapter on local data each round it is selected")
        {
            serverUrl, model, data, name, token, seqLen, dtype, outDir, unreachable, json,
        };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string dataPath = parse.GetValue(data)!, modelDir = parse.GetValue(model)!;
            if (!File.Exists(dataPath)) throw new PeftSharpException($"--data {dataPath}: file not found");
            if (new FileInfo(dataPath).Length == 0) throw new PeftSharpException($"--data {dataPath}: empty (expected training text or JSONL records)");
            string client = FederatedProtocol.CheckClientName(parse.GetValue(name) ?? Path.GetFileNameWithoutExtension(dataPath),
                                                              parse.GetValue(name) is null ? "--name (from --data's file name)" : "--name");
            if (!Uri.TryCreate(parse.GetValue(serverUrl), UriKind.Absolute, out var server) || server.Scheme is not ("http" or "https"))
                throw new PeftSharpException($"--server: expected an http:// or https:// address, got \"{parse.GetValue(serverUrl)}\"");
            string? secret = parse.GetValue(token) ?? (Environment.GetEnvironmentVariable(FederatedProtocol.TokenVariable) is { Length: > 0 } v ? v : null);
            ModelConfig.Load(modelDir);
            var tokenizer = ModelTokenizer.Load(modelDir);
            var examples = DataFiles.Load(dataPath, tokenizer, parse.GetValue(seqLen)).Examples;
            if (examples.Count == 0) throw new PeftSharpException($"--data {dataPath}: no training examples");
            long pad = tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;

            using var causal = ModelLoader.Load(modelDir, CliOptions.ParseDType(parse.GetValue(dtype)!));
            using var http = new FederatedHttpClient(server, secret, TimeSpan.FromSeconds(parse.GetValue(unreachable)));
            var work = Directory.CreateTempSubdirectory("peftsharp-federated-client-");
            LoraModel? lora = null;
            var rounds = new List<object>();
            try
            {
                Console.Error.WriteLine($"client {client}: {examples.Count} training examples; server {server}");
                while (true)
                {
                    var reply = http.CheckIn(client);
                    if (reply.Status == "done") break;
                    if (reply.Status != "train")
                    {
                        Thread.Sleep(TimeSpan.FromSeconds(Math.Clamp(reply.RetryAfterSeconds, 0.1, 30)));
                        continue;
                    }
                    string globalDir = Path.Combine(work.FullName, $"global-{reply.Round}");
                    Directory.CreateDirectory(globalDir);
                    http.DownloadAdapter(reply.Round, globalDir);
                    if (lora is null) lora = AdapterFiles.Load(causal, globalDir, trainable: true);
                    else
                    {
                        using var layout = LoraFactors.Read(lora, AdapterFiles.DefaultAdapter);
                        using var global = AdapterUpload.Read(Path.Combine(globalDir, AdapterFiles.WeightsFileName), layout, $"{server} round {reply.Round} adapter");
                        global.WriteTo(lora, AdapterFiles.DefaultAdapter);
                    }
                    lora.SetTrainable(AdapterFiles.DefaultAdapter, true);
                    if (reply.FreezeLoraA)
                        foreach (var layer in lora.LinearLayers.Values.Where(l => l.Adapters.ContainsKey(AdapterFiles.DefaultAdapter)))
                            layer.A(AdapterFiles.DefaultAdapter).weight.requires_grad = false;
                    var result = FederatedSimulation.TrainLocally(causal, lora, examples, pad, reply.LocalSteps, reply.LearningRate, reply.BatchSize, reply.Seed);
                    string trained = Path.Combine(work.FullName, $"trained-{reply.Round}");
                    AdapterFiles.Save(lora, trained, AdapterFiles.DefaultAdapter, modelDir);
                    string? refused = http.Upload(reply.Round, client, examples.Count, Path.Combine(trained, AdapterFiles.WeightsFileName));
                    Console.Error.WriteLine(refused is null
                        ? $"round {reply.Round}: {result.Steps} local steps, train loss {result.LastLoss:F4}; uploaded ({examples.Count} samples)"
                        : $"round {reply.Round}: upload refused: {refused}");
                    if (refused is null) rounds.Add(new { round = reply.Round, train_loss = result.LastLoss });
                    if (parse.GetValue(outDir) is string keep && refused is null) AdapterFiles.Save(lora, keep, AdapterFiles.DefaultAdapter, modelDir);
                    Directory.Delete(globalDir, recursive: true);
                    Directory.Delete(trained, recursive: true);
                }
            }
            finally
            {
                work.Delete(recursive: true);
            }
            Console.WriteLine($"done: client {client} took part in {rounds.Count} round(s)");
            if (parse.GetValue(json)) JsonOutput.Write(new { client, samples = examples.Count, rounds });
            return 0;
        }));
        return command;
    }
}
