using System.CommandLine;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Tokenization;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp eval</c>: mean next-token negative log-likelihood and perplexity of a text file.</summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var text = new Option<string>("--text") { Description = "UTF-8 text file to score", Required = true };
        var context = new Option<int?>("--context") { Description = "window length in tokens (default: the model's context)" }.AtLeast(2);
        var dtype = CliOptions.DType();
        var device = CliOptions.DeviceOption();
        var json = CliOptions.Json();
        var adapters = ModelSession.AdapterOption();
        var activeAdapters = ModelSession.ActiveAdapterOption();
        var rank = ModelSession.RankOption();
        var taskId = ModelSession.TaskIdOption();
        var delta = BitDeltaCommand.DeltaOption();
        var quantization = new QuantizationOptions();
        var command = new Command("eval", "score a text file: mean next-token NLL and perplexity") { model, text, context, dtype, device, json, adapters, activeAdapters, rank, taskId, delta };
        quantization.AddTo(command);
        command.SetAction(parse => CliErrors.Run(() => Run(quantization, parse,
            parse.GetValue(model)!, parse.GetValue(text)!, parse.GetValue(context),
            parse.GetValue(adapters)!, ModelSession.ParseActive(parse.GetValue(activeAdapters)!), parse.GetValue(rank), parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(json), parse.GetValue(delta), parse.GetValue(taskId))));
        return command;
    }

    static int Run(QuantizationOptions quantization, ParseResult parse, string modelDir, string textPath, int? context, string[] adapterDirs, IReadOnlyList<string>? active, int? rank, string dtypeName, string deviceName, bool json, string? deltaDir, int? taskId)
    {
        var dtype = CliOptions.ParseDType(dtypeName);
        var device = CliOptions.ParseDevice(deviceName);
        ModelConfig.Load(modelDir); // the model folder first: the cheapest check of what the user pointed at
        if (!File.Exists(textPath)) throw new PeftSharpException($"--text {textPath}: file not found");
        var tokenizer = ModelTokenizer.Load(modelDir);
        using var session = ModelSession.Load(modelDir, adapterDirs, dtype, device, rank, quantization.Parse(parse, modelDir, dtype), active);
        BitDeltaCommand.ApplyIfGiven(session.Model, deltaDir);
        using var task = ModelSession.UseTaskId(session.Model, taskId);
        var model = session.Model;
        var ids = tokenizer.Encode(File.ReadAllText(textPath), addSpecialTokens: true);
        if (ids.Count < 2) throw new PeftSharpException($"--text {textPath}: needs at least 2 tokens to score, got {ids.Count}");
        var result = Scoring.MeanNll(model, ids, context,
            (done, total) => Console.Error.Write($"\rscoring {done}/{total} tokens"));
        Console.Error.WriteLine();
        Console.WriteLine($"tokens: {result.Tokens}  nll: {result.MeanNll:F6}  perplexity: {result.Perplexity:F4}");
        if (json) JsonOutput.Write(new { tokens = result.Tokens, nll = result.MeanNll, perplexity = result.Perplexity });
        return 0;
    }
}
