using System.CommandLine;
using Microsoft.Extensions.Hosting;
using PeftSharp.Models;
using PeftSharp.Server;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Engine;
using PeftSharp.Tokenization;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp serve</c>: one base model and any number of adapters behind an OpenAI-compatible HTTP API, with
/// continuous batching that mixes adapters in one batch. See docs/serving.md.
/// </summary>
public static class ServeCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapters = new Option<string[]>("--adapter")
        {
            Description = "an adapter served under a name: NAME=DIR (repeat for several)",
            DefaultValueFactory = _ => [],
        };
        var adapterDir = new Option<string?>("--adapter-dir") { Description = "folder of adapters: requests may name its subfolders, and runtime loads must point inside it" };
        var allowRuntime = new Option<bool>("--allow-runtime-adapters") { Description = "enable POST /v1/load_lora_adapter and /v1/unload_lora_adapter (paths confined to --adapter-dir)" };
        var host = new Option<string>("--host") { Description = "address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "port to listen on (0: any free port)", DefaultValueFactory = _ => 8000 };
        var name = new Option<string?>("--served-model-name") { Description = "the name of the base model in requests (default: the model folder's name)" };
        var apiKey = new Option<string?>("--api-key") { Description = "require 'Authorization: Bearer KEY' on /v1/* (or set PEFTSHARP_API_KEY)" };
        var d = new ServerOptions();
        var maxBatch = new Option<int>("--max-batch-size") { Description = "rows decoded together", DefaultValueFactory = _ => d.MaxBatchSize };
        var maxLoaded = new Option<int>("--max-loaded-adapters") { Description = "adapters resident at once; the least recently used is unloaded beyond it", DefaultValueFactory = _ => d.MaxLoadedAdapters };
        var maxPrefill = new Option<int>("--max-prefill-tokens") { Description = "positions (rows x padded prompt length) one prefill forward may hold", DefaultValueFactory = _ => d.MaxPrefillTokens };
        var maxBody = new Option<long>("--max-body-bytes") { Description = "largest request body", DefaultValueFactory = _ => d.MaxBodyBytes };
        var maxPrompt = new Option<int?>("--max-prompt-tokens") { Description = "longest prompt (default: the model's context minus one)" };
        var maxTokens = new Option<int>("--max-tokens-limit") { Description = "largest max_tokens a request may ask for", DefaultValueFactory = _ => d.MaxTokensLimit };
        var maxConnections = new Option<int>("--max-connections") { Description = "concurrent connections", DefaultValueFactory = _ => d.MaxConnections };
        var maxQueue = new Option<int>("--max-queue") { Description = "requests waiting for a batch slot; more are refused with 429", DefaultValueFactory = _ => d.MaxQueue };
        var timeout = new Option<double>("--request-timeout") { Description = "seconds a request may take, waiting included", DefaultValueFactory = _ => d.RequestTimeout.TotalSeconds };
        var drain = new Option<double>("--drain-timeout") { Description = "seconds SIGTERM waits for running requests", DefaultValueFactory = _ => d.DrainTimeout.TotalSeconds };
        var dtype = CliOptions.DType();
        var device = CliOptions.DeviceOption();
        var quantization = new QuantizationOptions();
        var command = new Command("serve", "serve a model and its adapters over an OpenAI-compatible HTTP API")
        {
            model, adapters, adapterDir, allowRuntime, host, port, name, apiKey, maxBatch, maxLoaded, maxPrefill, maxBody, maxPrompt, maxTokens,
            maxConnections, maxQueue, timeout, drain, dtype, device,
        };
        quantization.AddTo(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string modelDir = parse.GetValue(model)!;
            var options = new ServerOptions
            {
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                ServedModelName = parse.GetValue(name),
                ApiKey = parse.GetValue(apiKey) ?? NullIfEmpty(Environment.GetEnvironmentVariable("PEFTSHARP_API_KEY")),
                Adapters = parse.GetValue(adapters)!.Select(ParseAdapter).ToList(),
                AdapterDir = parse.GetValue(adapterDir),
                AllowRuntimeAdapters = parse.GetValue(allowRuntime),
                MaxBatchSize = parse.GetValue(maxBatch),
                MaxLoadedAdapters = parse.GetValue(maxLoaded),
                MaxPrefillTokens = parse.GetValue(maxPrefill),
                MaxBodyBytes = parse.GetValue(maxBody),
                MaxPromptTokens = parse.GetValue(maxPrompt),
                MaxTokensLimit = parse.GetValue(maxTokens),
                MaxConnections = parse.GetValue(maxConnections),
                MaxQueue = parse.GetValue(maxQueue),
                RequestTimeout = Seconds("--request-timeout", parse.GetValue(timeout)),
                DrainTimeout = Seconds("--drain-timeout", parse.GetValue(drain)),
            };
            options.Validate();
            var dt = CliOptions.ParseDType(parse.GetValue(dtype)!);
            ModelConfig.Load(modelDir);
            var tokenizer = ModelTokenizer.Load(modelDir);
            using var loaded = ModelLoader.Load(modelDir, dt, CliOptions.ParseDevice(parse.GetValue(device)!), quantization.Parse(parse, modelDir, dt));
            loaded.eval();
            string servedName = options.ServedModelName ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDir)));
            var served = new ServedModel(loaded, tokenizer, new PeftAdapterBackend(loaded), servedName);
            var app = ServerHost.Build(served, options, logToConsole: true);
            app.Start();
            Console.Error.WriteLine($"serving {servedName} ({options.Adapters.Count} adapters) on {string.Join(", ", app.Urls)}; Ctrl+C or SIGTERM stops after running requests finish");
            app.WaitForShutdown();
            return 0;
        }));
        return command;
    }

    static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    static TimeSpan Seconds(string flag, double seconds) =>
        seconds > 0 && double.IsFinite(seconds) ? TimeSpan.FromSeconds(seconds) : throw new PeftSharpException($"{flag}: expected a positive number of seconds, got {seconds}");

    static (string Name, string Dir) ParseAdapter(string text)
    {
        int eq = text.IndexOf('=');
        if (eq <= 0 || eq == text.Length - 1) throw new PeftSharpException($"--adapter: expected NAME=DIR, got \"{text}\"");
        return (text[..eq], text[(eq + 1)..]);
    }
}
