using System.CommandLine;
using System.Diagnostics;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Tokenization;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp generate</c>: continue a prompt, streaming the text as it is produced.</summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var prompt = new Option<string>("--prompt") { Description = "text to continue", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "tokens to generate at most", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "sampling temperature; 0 = greedy", DefaultValueFactory = _ => 0.0 };
        var topP = new Option<double>("--top-p") { Description = "nucleus sampling: keep the most likely tokens up to this probability mass", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<int>("--seed") { Description = "random seed for sampling", DefaultValueFactory = _ => 0 };
        var dtype = CliOptions.DType();
        var device = CliOptions.DeviceOption();
        var json = CliOptions.Json();
        var adapters = ModelSession.AdapterOption();
        var rank = ModelSession.RankOption();
        var quantization = new QuantizationOptions();
        var command = new Command("generate", "generate text from a prompt") { model, prompt, maxNew, temperature, topP, seed, dtype, device, json, adapters, rank };
        quantization.AddTo(command);
        command.SetAction(parse => CliErrors.Run(() => Run(quantization, parse,
            parse.GetValue(model)!, parse.GetValue(prompt)!,
            new GenerationOptions(parse.GetValue(maxNew), parse.GetValue(temperature), parse.GetValue(topP), parse.GetValue(seed)),
            parse.GetValue(adapters)!, parse.GetValue(rank), parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(json))));
        return command;
    }

    static int Run(QuantizationOptions quantization, ParseResult parse, string modelDir, string prompt, GenerationOptions options, string[] adapterDirs, int? rank, string dtypeName, string deviceName, bool json)
    {
        if (options.MaxNewTokens < 0) throw new PeftSharpException($"--max-new-tokens: expected a non-negative count, got {options.MaxNewTokens}");
        if (options.Temperature < 0) throw new PeftSharpException($"--temperature: expected ≥ 0, got {options.Temperature}");
        if (options.TopP is <= 0 or > 1) throw new PeftSharpException($"--top-p: expected a value in (0, 1], got {options.TopP}");
        var dtype = CliOptions.ParseDType(dtypeName);
        var device = CliOptions.ParseDevice(deviceName);
        ModelConfig.Load(modelDir); // the model folder first: the cheapest check of what the user pointed at
        var tokenizer = ModelTokenizer.Load(modelDir);
        using var session = ModelSession.Load(modelDir, adapterDirs, dtype, device, rank, quantization.Parse(parse, modelDir, dtype));
        var model = session.Model;
        var generator = new TextGenerator(model, tokenizer);
        // With --json, stdout must end with the JSON line; the streamed text then goes to stderr.
        var stream = json ? Console.Error : Console.Out;
        stream.Write(prompt);
        var clock = Stopwatch.StartNew();
        var ids = generator.Generate(prompt, options, piece => { stream.Write(piece); stream.Flush(); });
        clock.Stop();
        stream.WriteLine();
        if (json)
            JsonOutput.Write(new
            {
                prompt,
                completion = tokenizer.Decode(ids, skipSpecialTokens: true),
                tokens = ids.Count,
                tokens_per_second = ids.Count / Math.Max(clock.Elapsed.TotalSeconds, 1e-9),
            });
        return 0;
    }
}
