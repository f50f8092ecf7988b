using System.Text.Json;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary><c>peftsharp tokenize</c> on folders holding only tokenizer files; expected ids come from the test's own naive BPE.</summary>
public class TokenizeCliTests
{
    static string TokenizerOnlyFolder(object? config = null)
    {
        var dir = Directory.CreateTempSubdirectory("peftsharp-tokenize-").FullName;
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson(postProcessor: TinyBpe.BosTemplate())));
        if (config is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(config));
        return dir;
    }

    static int[] Ints(JsonElement e) => [.. e.EnumerateArray().Select(x => x.GetInt32())];

    [Fact]
    public void Text_gives_ids_and_tokens_with_and_without_special_tokens()
    {
        var dir = TokenizerOnlyFolder();
        const string text = "hello world<|endoftext|> the";
        var r = CliRunner.Run("tokenize", "--model", dir, "--text", text, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        int[] body = [.. TinyBpe.ReferenceEncode("hello world"), TinyBpe.EndOfText, .. TinyBpe.ReferenceEncode(" the")];
        Assert.Equal([TinyBpe.BeginOfText, .. body], Ints(json.GetProperty("ids")));
        Assert.Equal(["<|begin_of_text|>", "hello", "Ġworld", "<|endoftext|>", "Ġthe"], json.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()));

        var plain = CliRunner.Run("tokenize", "--model", dir, "--text", text, "--no-special-tokens", "--json");
        Assert.Equal(body, Ints(plain.Json().GetProperty("ids")));
    }

    [Fact]
    public void File_gives_one_json_line_per_input_line()
    {
        var dir = TokenizerOnlyFolder();
        string input = Path.Combine(dir, "lines.txt");
        File.WriteAllText(input, "hello world\n\nthe elle\n");
        var r = CliRunner.Run("tokenize", "--model", dir, "--file", input, "--no-special-tokens");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var lines = r.Stdout.TrimEnd('\n').Split('\n');
        Assert.Equal(3, lines.Length);
        Assert.Equal(TinyBpe.ReferenceEncode("hello world"), Ints(JsonDocument.Parse(lines[0]).RootElement.GetProperty("ids")));
        Assert.Empty(Ints(JsonDocument.Parse(lines[1]).RootElement.GetProperty("ids")));
        Assert.Equal(TinyBpe.ReferenceEncode("the elle"), Ints(JsonDocument.Parse(lines[2]).RootElement.GetProperty("ids")));
    }

    [Fact]
    public void Chat_is_rendered_with_the_template_and_tokenized_without_extra_bos()
    {
        const string template = "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
        var dir = TokenizerOnlyFolder(new { bos_token = "<|begin_of_text|>", chat_template = template });
        string messages = Path.Combine(dir, "messages.json");
        File.WriteAllText(messages, """[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]""");
        var r = CliRunner.Run("tokenize", "--model", dir, "--chat", messages, "--add-generation-prompt", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        const string expected = "<|begin_of_text|><system>be brief\n<user>hello world\n<assistant>";
        var json = r.Json();
        Assert.Equal(expected, json.GetProperty("text").GetString());
        Assert.Equal([TinyBpe.BeginOfText, .. TinyBpe.ReferenceEncode(expected["<|begin_of_text|>".Length..])], Ints(json.GetProperty("ids")));
    }

    [Fact]
    public void Malformed_messages_file_names_file_line_and_column()
    {
        var dir = TokenizerOnlyFolder(new { chat_template = "{{ messages }}" });
        string messages = Path.Combine(dir, "messages.json");
        File.WriteAllText(messages, "[\n  {\"role\": \"user\", \"content\": \"hi\"}\n  {\"role\": \"user\"}\n]");
        var line = CliRunner.AssertUserError(CliRunner.Run("tokenize", "--model", dir, "--chat", messages));
        Assert.Equal($"error: {messages}: invalid JSON at line 3, column 3: expected a comma or a closing bracket after the value", line);
    }

    [Fact]
    public void Exactly_one_input_is_required()
    {
        var dir = TokenizerOnlyFolder();
        Assert.Contains("--text, --file or --chat", CliRunner.AssertUserError(CliRunner.Run("tokenize", "--model", dir)));
        Assert.Contains("--text, --file or --chat", CliRunner.AssertUserError(CliRunner.Run("tokenize", "--model", dir, "--text", "a", "--file", "b")));
    }

    [RealTokenizerTheory]
    [InlineData("gemma3", 2)]
    [InlineData("deepseek_v3", 0)]
    public void Real_tokenizer_folders_give_hugging_face_ids(string model, int bos)
    {
        // The real files (tokenizer.json + tokenizer_config.json only) against the golden ids of Hugging Face's JS
        // tokenizers for the emoji text, with the BOS transformers adds for these two (add_bos_token: true).
        using var goldens = JsonDocument.Parse(File.ReadAllText(Path.Combine(RealTokenizerTests.Folder, "goldens.json")));
        string text = goldens.RootElement.GetProperty("texts")[8].GetString()!;
        int[] want = [bos, .. Ints(goldens.RootElement.GetProperty("models").GetProperty(model)[8].GetProperty("ids"))];
        var r = CliRunner.Run("tokenize", "--model", RealTokenizerTests.ModelDir(model), "--text", text, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(want, Ints(r.Json().GetProperty("ids")));
    }
}
