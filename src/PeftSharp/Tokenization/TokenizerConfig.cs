using System.Globalization;
using System.Text.Json;

namespace PeftSharp.Tokenization;

/// <summary>
/// What transformers reads next to the vocabulary: tokenizer_config.json, with special_tokens_map.json,
/// added_tokens.json, chat_template.jinja and config.json as fallbacks for older or minimal folders.
/// </summary>
internal sealed class TokenizerConfig
{
    public string? TokenizerClass { get; private init; }
    public string? BosToken { get; private init; }
    public string? EosToken { get; private init; }
    public string? UnkToken { get; private init; }
    public string? PadToken { get; private init; }
    public bool? AddBosToken { get; private init; }
    public bool? AddEosToken { get; private init; }
    public bool CleanUpTokenizationSpaces { get; private init; }
    public string? ChatTemplate { get; private init; }
    public IReadOnlyList<AddedTokenInfo> AddedTokens { get; private init; } = [];

    /// <summary>
    /// Classes whose fast tokenizer rebuilds its post-processor from add_bos_token/add_eos_token
    /// (defaults true/false) instead of keeping the one in tokenizer.json (transformers'
    /// LlamaTokenizerFast, CodeLlamaTokenizerFast and GemmaTokenizerFast call update_post_processor in __init__).
    /// </summary>
    public bool IsLlamaFamily => BaseClass is "LlamaTokenizer" or "CodeLlamaTokenizer" or "GemmaTokenizer";

    /// <summary>GPT2Tokenizer(Fast) defaults bos, eos and unk to &lt;|endoftext|&gt; when the folder does not name them.</summary>
    public bool IsGpt2Family => BaseClass is "GPT2Tokenizer";

    private string? BaseClass => TokenizerClass is { } c && c.EndsWith("Fast", StringComparison.Ordinal) ? c[..^4] : TokenizerClass;

    public static TokenizerConfig Load(string dir)
    {
        using var config = JsonFile.TryRead(Path.Combine(dir, "tokenizer_config.json"));
        using var specialMap = JsonFile.TryRead(Path.Combine(dir, "special_tokens_map.json"));
        using var addedJson = JsonFile.TryRead(Path.Combine(dir, "added_tokens.json"));
        using var modelConfig = JsonFile.TryRead(Path.Combine(dir, "config.json"));

        JsonElement cfg = config?.RootElement ?? default;
        JsonElement map = specialMap?.RootElement ?? default;
        string? Named(string key) => cfg.TokenContent(key) ?? map.TokenContent(key);

        string? chatTemplate = null;
        string jinja = Path.Combine(dir, "chat_template.jinja");
        if (File.Exists(jinja)) chatTemplate = File.ReadAllText(jinja); // newer transformers save it here, and it wins
        else if (cfg.Prop("chat_template") is { } t)
        {
            chatTemplate = t.ValueKind switch
            {
                JsonValueKind.String => t.GetString(),
                // Several named templates: transformers uses the one called "default".
                JsonValueKind.Array => t.EnumerateArray().FirstOrDefault(x => x.Str("name") == "default").Str("template"),
                _ => null,
            };
        }

        var added = new List<AddedTokenInfo>();
        if (cfg.Prop("added_tokens_decoder") is { ValueKind: JsonValueKind.Object } decoder)
        {
            foreach (var p in decoder.EnumerateObject())
            {
                if (!int.TryParse(p.Name, NumberStyles.Integer, CultureInfo.InvariantCulture, out int id) || p.Value.Str("content") is not { } content)
                    throw new PeftSharpException($"'{Path.Combine(dir, "tokenizer_config.json")}': added_tokens_decoder entry '{p.Name}' needs an integer id and a content string.");
                added.Add(new AddedTokenInfo(id, content, p.Value.Bool("special") ?? false));
            }
        }
        // Legacy slow-tokenizer format: {"token": id}.
        if (addedJson?.RootElement is { ValueKind: JsonValueKind.Object } legacy)
        {
            foreach (var p in legacy.EnumerateObject())
                if (p.Value.ValueKind == JsonValueKind.Number) added.Add(new AddedTokenInfo(p.Value.GetInt32(), p.Name, Special: false));
        }

        return new TokenizerConfig
        {
            // AutoTokenizer falls back to the model type in config.json when tokenizer_config.json names no class.
            TokenizerClass = cfg.Str("tokenizer_class") ?? ClassForModelType(modelConfig?.RootElement.Str("model_type")),
            BosToken = Named("bos_token"),
            EosToken = Named("eos_token"),
            UnkToken = Named("unk_token"),
            PadToken = Named("pad_token"),
            AddBosToken = cfg.Bool("add_bos_token"),
            AddEosToken = cfg.Bool("add_eos_token"),
            CleanUpTokenizationSpaces = cfg.Bool("clean_up_tokenization_spaces") ?? false,
            ChatTemplate = chatTemplate,
            AddedTokens = added,
        };
    }

    // Only the model types whose tokenizer class changes what we do (defaults, BOS rules).
    private static string? ClassForModelType(string? modelType) => modelType switch
    {
        "gpt2" => "GPT2TokenizerFast",
        "llama" or "mistral" or "mixtral" => "LlamaTokenizerFast",
        "gemma" => "GemmaTokenizerFast",
        _ => null,
    };
}
