using System.CommandLine;
using System.Diagnostics;
using PeftSharp.Inference;
using PeftSharp.Jinja;
using PeftSharp.Models;
using PeftSharp.Tokenization;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp generate</c>: continue a prompt, streaming the text as it is produced. With <c>--chat</c> the prompt is
/// a user message (after an optional <c>--system</c> message) put through the tokenizer's chat template with the
/// generation prompt, as transformers' <c>apply_chat_template(..., add_generation_prompt=True)</c>.
/// </summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var prompt = new Option<string>("--prompt") { Description = "text to continue", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "tokens to generate at most", DefaultValueFactory = _ => 64 }.AtLeast(0);
        var temperature = new Option<double>("--temperature") { Description = "sampling temperature; 0 = greedy", DefaultValueFactory = _ => 0.0 }.AtLeast(0);
        var topP = new Option<double>("--top-p") { Description = "nucleus sampling: keep the most likely tokens up to this probability mass", DefaultValueFactory = _ => 1.0 }.InRange(0, 1, minInclusive: false);
        var seed = new Option<int>("--seed") { Description = "random seed for sampling", DefaultValueFactory = _ => 0 }.AtLeast(0);
        var chat = new Option<bool>("--chat") { Description = "treat --prompt as a user message and format it with the tokenizer's chat template" };
        var system = new Option<string?>("--system") { Description = "a system message before the user message (with --chat)" };
        var dtype = CliOptions.DType();
        var device = CliOptions.DeviceOption();
        var json = CliOptions.Json();
        var adapters = ModelSession.AdapterOption();
        var activeAdapters = ModelSession.ActiveAdapterOption();
        var rank = ModelSession.RankOption();
        var taskId = ModelSession.TaskIdOption();
        var delta = BitDeltaCommand.DeltaOption();
        var quantization = new QuantizationOptions();
        var command = new Command("generate", "generate text from a prompt") { model, prompt, maxNew, temperature, topP, seed, chat, system, dtype, device, json, adapters, activeAdapters, rank, taskId, delta };
        quantization.AddTo(command);
        command.SetAction(parse => CliErrors.Run(() => Run(quantization, parse,
            parse.GetValue(model)!, parse.GetValue(prompt)!, parse.GetValue(chat), parse.GetValue(system),
            new GenerationOptions(parse.GetValue(maxNew), parse.GetValue(temperature), parse.GetValue(topP), parse.GetValue(seed)),
            parse.GetValue(adapters)!, ModelSession.ParseActive(parse.GetValue(activeAdapters)!), parse.GetValue(rank), parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(json), parse.GetValue(delta), parse.GetValue(taskId))));
        return command;
    }

    static int Run(QuantizationOptions quantization, ParseResult parse, string modelDir, string prompt, bool chat, string? system, GenerationOptions options, string[] adapterDirs, IReadOnlyList<string>? active, int? rank, string dtypeName, string deviceName, bool json, string? deltaDir, int? taskId)
    {
        if (system is not null && !chat) throw new PeftSharpException("--system: only meaningful with --chat");
        var dtype = CliOptions.ParseDType(dtypeName);
        var device = CliOptions.ParseDevice(deviceName);
        ModelConfig.Load(modelDir); // the model folder first: the cheapest check of what the user pointed at
        var tokenizer = ModelTokenizer.Load(modelDir);
        string text = chat ? RenderChat(tokenizer, modelDir, system, prompt) : prompt;
        using var session = ModelSession.Load(modelDir, adapterDirs, dtype, device, rank, quantization.Parse(parse, modelDir, dtype), active);
        BitDeltaCommand.ApplyIfGiven(session.Model, deltaDir);
        using var task = ModelSession.UseTaskId(session.Model, taskId);
        var model = session.Model;
        var generator = new TextGenerator(model, tokenizer);
        // With --json, stdout must end with the JSON line; the streamed text then goes to stderr.
        var stream = json ? Console.Error : Console.Out;
        stream.Write(text);
        var clock = Stopwatch.StartNew();
        // A rendered chat holds its own special tokens (BOS and role headers), so none are added.
        var promptIds = tokenizer.Encode(text, addSpecialTokens: !chat);
        var ids = generator.Generate(promptIds, options, piece => { stream.Write(piece); stream.Flush(); });
        clock.Stop();
        stream.WriteLine();
        if (json)
            JsonOutput.Write(new
            {
                prompt,
                prompt_text = text,
                completion = tokenizer.Decode(ids, skipSpecialTokens: true),
                tokens = ids.Count,
                tokens_per_second = ids.Count / Math.Max(clock.Elapsed.TotalSeconds, 1e-9),
            });
        return 0;
    }

    static string RenderChat(ModelTokenizer tokenizer, string modelDir, string? system, string prompt)
    {
        var template = ChatTemplate.FromTokenizer(tokenizer)
            ?? throw new PeftSharpException($"--chat: '{modelDir}' has no chat template (chat_template.jinja, or chat_template in tokenizer_config.json)");
        var messages = new List<object?>();
        if (system is not null) messages.Add(JinjaValues.ToDict([("role", "system"), ("content", system)]));
        messages.Add(JinjaValues.ToDict([("role", "user"), ("content", prompt)]));
        try
        {
            return template.Render(messages, addGenerationPrompt: true);
        }
        catch (JinjaRaisedException e)
        {
            throw new PeftSharpException($"--chat: the chat template rejects the conversation: {e.TemplateMessage}");
        }
        catch (JinjaException e)
        {
            throw new PeftSharpException($"--chat: the chat template failed: {e.Message}");
        }
    }
}
