using System.CommandLine;
using System.Text.Json;
using PeftSharp.Jinja;
using PeftSharp.Tokenization;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp tokenize</c>: the token ids (and vocabulary entries) of a text, of each line of a file, or of a chat
/// rendered with the model's chat template — what the model sees, from the same tokenizer train, eval and generate use.
/// The folder may hold only tokenizer files.
/// </summary>
public static class TokenizeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "model or tokenizer folder (tokenizer.json, vocab.json + merges.txt, or tokenizer.model)", Required = true };
        var text = new Option<string?>("--text") { Description = "the text to tokenize" };
        var file = new Option<string?>("--file") { Description = "a UTF-8 file: one JSON line {\"ids\": [...]} per input line" };
        var chat = new Option<string?>("--chat") { Description = "a JSON file of messages [{\"role\", \"content\"}, ...] to render with the chat template" };
        var noSpecial = new Option<bool>("--no-special-tokens") { Description = "do not add BOS/EOS (--text, --file)" };
        var generationPrompt = new Option<bool>("--add-generation-prompt") { Description = "end the chat with the assistant's header (--chat)" };
        var json = CliOptions.Json();
        var command = new Command("tokenize", "token ids of a text, a file's lines, or a chat, as the model's tokenizer makes them")
            { model, text, file, chat, noSpecial, generationPrompt, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(text), parse.GetValue(file), parse.GetValue(chat),
            !parse.GetValue(noSpecial), parse.GetValue(generationPrompt), parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string? text, string? file, string? chat, bool addSpecial, bool generationPrompt, bool json)
    {
        int given = (text is null ? 0 : 1) + (file is null ? 0 : 1) + (chat is null ? 0 : 1);
        if (given != 1) throw new PeftSharpException("tokenize: give exactly one of --text, --file or --chat");
        if (generationPrompt && chat is null) throw new PeftSharpException("--add-generation-prompt: only meaningful with --chat");
        if (file is not null && !File.Exists(file)) throw new PeftSharpException($"--file {file}: file not found");
        if (chat is not null && !File.Exists(chat)) throw new PeftSharpException($"--chat {chat}: file not found");
        if (!Directory.Exists(modelDir)) throw new PeftSharpException($"--model {modelDir}: folder not found");
        var tokenizer = ModelTokenizer.Load(modelDir);

        if (file is not null)
        {
            // One JSON line per input line (the line without its end-of-line characters), as a dataset tool would want.
            foreach (var line in File.ReadLines(file))
                JsonOutput.Write(new { ids = tokenizer.Encode(line, addSpecial) });
            return 0;
        }
        if (chat is not null)
        {
            string rendered = RenderChat(tokenizer, modelDir, chat, generationPrompt);
            // The rendered text already holds the template's special tokens (BOS, role headers): none are added,
            // as transformers' apply_chat_template(tokenize=True) does.
            var chatIds = tokenizer.Encode(rendered, addSpecialTokens: false);
            if (!json) Console.WriteLine(rendered);
            JsonOutput.Write(new { text = rendered, ids = chatIds });
            return 0;
        }

        var ids = tokenizer.Encode(text!, addSpecial);
        var tokens = ids.Select(id => tokenizer.IdToToken(id)).ToList();
        if (!json)
        {
            Console.WriteLine($"{ids.Count} tokens");
            for (int i = 0; i < ids.Count; i++) Console.WriteLine($"{ids[i],8}  {JsonSerializer.Serialize(tokens[i])}");
        }
        JsonOutput.Write(new { ids, tokens });
        return 0;
    }

    static string RenderChat(ModelTokenizer tokenizer, string modelDir, string path, bool generationPrompt)
    {
        var template = ChatTemplate.FromTokenizer(tokenizer)
            ?? throw new PeftSharpException($"--chat: '{modelDir}' has no chat template (chat_template.jinja, or chat_template in tokenizer_config.json)");
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            root = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw PeftSharp.IO.JsonErrors.Invalid(path, e);
        }
        // Either a list of messages or {"messages": [...]} (the JSONL training format's record).
        if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("messages", out var inner)) root = inner;
        if (root.ValueKind != JsonValueKind.Array)
            throw new PeftSharpException($"{path}: expected a JSON array of messages [{{\"role\": ..., \"content\": ...}}, ...] or {{\"messages\": [...]}}");
        int index = 0;
        foreach (var m in root.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object || !m.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String)
                throw new PeftSharpException($"{path}: messages[{index}] needs a \"role\" string");
            index++;
        }
        var messages = root.EnumerateArray().Select(JinjaValues.FromJson).ToList();
        try
        {
            return template.Render(messages, addGenerationPrompt: generationPrompt);
        }
        catch (JinjaRaisedException e)
        {
            throw new PeftSharpException($"--chat {path}: the chat template rejects the conversation: {e.TemplateMessage}");
        }
        catch (JinjaException e)
        {
            throw new PeftSharpException($"--chat {path}: the chat template failed: {e.Message}");
        }
    }
}
