using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace PeftSharp.Tokenization;

/// <summary>The ids a post-processor puts around an encoded text (e.g. BOS before it).</summary>
internal sealed record PostTemplate(int[] Prefix, int[] Suffix)
{
    public static readonly PostTemplate None = new([], []);
}

/// <summary>
/// A Hugging Face tokenizer.json, read into the inputs Microsoft.ML.Tokenizers' BpeTokenizer takes.
/// Only byte-level BPE files are turned into a tokenizer; for others <see cref="NotByteLevelBpe"/> says what
/// the file is, so the caller can fall back to tokenizer.model.
/// </summary>
internal sealed class TokenizerJson
{
    public required string Path { get; init; }
    public required IReadOnlyList<AddedTokenInfo> AddedTokens { get; init; }

    /// <summary>Null when the file is a byte-level BPE we can build; otherwise a short description of it.</summary>
    public string? NotByteLevelBpe { get; private init; }

    public Dictionary<string, int> Vocab { get; private init; } = [];
    public PostTemplate Template { get; private init; } = PostTemplate.None;

    /// <summary>HF's BPE ignore_merges: a whole word found in the vocabulary is one token (Llama 3 sets it).</summary>
    public bool IgnoreMerges { get; private init; }

    private List<string> _merges = [];
    private IReadOnlyList<SplitStep> _steps = [];
    private Normalizer? _normalizer;
    private string? _unkToken, _subwordPrefix, _wordSuffix;
    private bool _fuseUnk, _byteFallback;
    private List<(string, string)> _mergePairs = [];
    private SentencePieceBpeSteps? _spSteps;

    public static TokenizerJson Read(string path)
    {
        try
        {
            return ReadCore(path);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or KeyNotFoundException)
        {
            // Valid JSON with a value of the wrong kind (GetInt32 on a string...).
            throw new PeftSharpException($"'{path}' is not a valid tokenizer.json: {JsonFile.OneLine(ex.Message)}", ex);
        }
    }

    private static TokenizerJson ReadCore(string path)
    {
        using var doc = JsonFile.TryRead(path)!;
        var root = doc.RootElement;
        var added = new List<AddedTokenInfo>();
        if (root.Prop("added_tokens") is { ValueKind: JsonValueKind.Array } list)
        {
            foreach (var t in list.EnumerateArray())
            {
                if (t.Prop("id") is not { ValueKind: JsonValueKind.Number } id || t.Str("content") is not { } content)
                    throw new PeftSharpException($"'{path}': every added_tokens entry needs an id and a content.");
                added.Add(new AddedTokenInfo(id.GetInt32(), content, t.Bool("special") ?? false));
            }
        }

        var model = root.Prop("model") ?? throw new PeftSharpException($"'{path}' has no \"model\" section.");
        string type = model.Str("type") ?? (model.Prop("merges") is null ? "unknown" : "BPE");
        var pre = root.Prop("pre_tokenizer");
        if (type == "BPE" && !Contains(pre, "pretokenizers", "ByteLevel"))
        {
            // SentencePiece converted to tokenizer.json (Llama 2, Mistral, Gemma): characters, not bytes, plus byte fallback.
            var steps0 = SentencePieceBpeSteps.Read(path, root);
            return new TokenizerJson
            {
                Path = path,
                AddedTokens = added,
                NotByteLevelBpe = $"model BPE, pre_tokenizer {pre?.Str("type") ?? "none"}",
                Vocab = ReadVocab(path, model),
                Template = ReadPostProcessor(path, root.Prop("post_processor")),
                IgnoreMerges = model.Bool("ignore_merges") ?? false,
                _mergePairs = ReadMergePairs(path, model),
                _spSteps = steps0,
                _unkToken = model.Str("unk_token"),
                _fuseUnk = model.Bool("fuse_unk") ?? false,
                _byteFallback = model.Bool("byte_fallback") ?? false,
                _subwordPrefix = NullIfEmpty(model.Str("continuing_subword_prefix")),
                _wordSuffix = NullIfEmpty(model.Str("end_of_word_suffix")),
            };
        }
        if (type != "BPE")
            return new TokenizerJson { Path = path, AddedTokens = added, NotByteLevelBpe = $"model {type}, pre_tokenizer {pre?.Str("type") ?? "none"}" };

        var steps = new List<SplitStep>();
        AddSteps(path, pre, steps);
        var forms = new List<NormalizationForm>();
        AddNormalizer(path, root.Prop("normalizer"), forms);

        // Decoding is Microsoft.ML.Tokenizers' byte-level decode, which is what HF's ByteLevel decoder does.
        if (root.Prop("decoder") is { } decoder && !IsOnly(decoder, "decoders", "ByteLevel"))
            throw Unsupported(path, $"decoder '{decoder.Str("type")}' (only ByteLevel is supported for byte-level BPE)");

        return new TokenizerJson
        {
            Path = path,
            AddedTokens = added,
            Vocab = ReadVocab(path, model),
            Template = ReadPostProcessor(path, root.Prop("post_processor")),
            IgnoreMerges = model.Bool("ignore_merges") ?? false,
            _merges = ReadMerges(path, model),
            _steps = steps,
            _normalizer = forms.Count == 0 ? null : new UnicodeNormalizer(forms),
            _unkToken = model.Str("unk_token"),
            _subwordPrefix = NullIfEmpty(model.Str("continuing_subword_prefix")),
            _wordSuffix = NullIfEmpty(model.Str("end_of_word_suffix")),
            _fuseUnk = model.Bool("fuse_unk") ?? false,
        };
    }

    /// <summary>Whether this is a character-level BPE with byte fallback (SentencePiece converted), built by <see cref="CreateByteFallbackBpe"/>.</summary>
    public bool IsByteFallbackBpe => _spSteps is not null;

    /// <summary>Builds the tokenizer of a SentencePiece-converted file; <paramref name="addedTokens"/> are matched verbatim first.</summary>
    public ByteFallbackBpeTokenizer CreateByteFallbackBpe(IReadOnlyDictionary<string, int> addedTokens)
    {
        if (_subwordPrefix is not null || _wordSuffix is not null)
            throw Unsupported(Path, "continuing_subword_prefix/end_of_word_suffix without a ByteLevel pre_tokenizer");
        return new ByteFallbackBpeTokenizer(Vocab, _mergePairs, _byteFallback, _unkToken, _fuseUnk, IgnoreMerges, _spSteps!, addedTokens, $"'{Path}'");
    }

    /// <summary>Builds the tokenizer; <paramref name="addedTokens"/> are matched verbatim before BPE.</summary>
    public BpeTokenizer CreateBpe(IReadOnlyDictionary<string, int> addedTokens) => CreateByteLevelBpe($"'{Path}'", new BpeOptions(Vocab)
    {
        Merges = _merges,
        SpecialTokens = addedTokens.Count == 0 ? null : addedTokens,
        PreTokenizer = new HfPreTokenizer(addedTokens.Keys, _steps),
        Normalizer = _normalizer,
        UnknownToken = _unkToken,
        FuseUnknownTokens = _fuseUnk,
        ContinuingSubwordPrefix = _subwordPrefix,
        EndOfWordSuffix = _wordSuffix,
        ByteLevel = true,
    });

    /// <summary>Creates a byte-level BpeTokenizer, turning its complaints (a merge of unknown tokens...) into one-line errors naming <paramref name="source"/>.</summary>
    public static BpeTokenizer CreateByteLevelBpe(string source, BpeOptions options)
    {
        try
        {
            return BpeTokenizer.Create(options);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
        {
            throw new PeftSharpException($"{source}: {JsonFile.OneLine(ex.Message)}", ex);
        }
    }

    private static Dictionary<string, int> ReadVocab(string path, JsonElement model)
    {
        if (model.Prop("vocab") is not { ValueKind: JsonValueKind.Object } vocab)
            throw new PeftSharpException($"'{path}': model.vocab must be an object of token -> id.");
        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocab.EnumerateObject()) result[p.Name] = p.Value.GetInt32();
        return result;
    }

    // Merges come as "a b" strings (older files) or as ["a", "b"] pairs (tokenizers >= 0.20).
    // BpeOptions takes the string form, so a pair whose tokens contain a space cannot be expressed;
    // byte-level vocabularies never contain one (space is spelled 'Ġ').
    private static List<string> ReadMerges(string path, JsonElement model)
    {
        var merges = new List<string>();
        if (model.Prop("merges") is not { ValueKind: JsonValueKind.Array } array) return merges;
        foreach (var m in array.EnumerateArray())
        {
            string? merge = m.ValueKind switch
            {
                JsonValueKind.String when m.GetString()!.Split(' ').Length == 2 => m.GetString(),
                JsonValueKind.Array when m.GetArrayLength() == 2 && m[0].GetString() is { } a && m[1].GetString() is { } b
                                          && !a.Contains(' ') && !b.Contains(' ') => $"{a} {b}",
                _ => null,
            };
            merges.Add(merge ?? throw new PeftSharpException($"'{path}': merge {m.GetRawText()} is not a pair of space-free tokens."));
        }
        return merges;
    }

    // Merges as pairs: "a b" strings or ["a", "b"] arrays; in pair form tokens may contain spaces.
    private static List<(string, string)> ReadMergePairs(string path, JsonElement model)
    {
        var merges = new List<(string, string)>();
        foreach (var m in model.Prop("merges").Items())
        {
            if (m.ValueKind == JsonValueKind.String && m.GetString()!.Split(' ') is [var a, var b]) merges.Add((a, b));
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].GetString() is { } x && m[1].GetString() is { } y) merges.Add((x, y));
            else throw new PeftSharpException($"'{path}': merge {m.GetRawText()} is not a pair of tokens.");
        }
        return merges;
    }

    private static void AddSteps(string path, JsonElement? pre, List<SplitStep> steps)
    {
        if (pre is not { } p) return;
        switch (p.Str("type"))
        {
            case "Sequence":
                foreach (var inner in p.Prop("pretokenizers").Items()) AddSteps(path, inner, steps);
                break;
            case "ByteLevel":
                // add_prefix_space inserts a space into each piece; a PreTokenizer can only cut, not insert.
                if (p.Bool("add_prefix_space") == true)
                    throw Unsupported(path, "ByteLevel pre_tokenizer with add_prefix_space=true");
                if (p.Bool("use_regex") ?? true) steps.Add(SplitStep.Gpt2());
                break;
            case "Split":
                if (p.Bool("invert") == true) throw Unsupported(path, "Split pre_tokenizer with invert=true");
                var pattern = p.Prop("pattern");
                string regex = pattern?.Str("Regex") ?? (pattern?.Str("String") is { } s ? Regex.Escape(s)
                    : throw new PeftSharpException($"'{path}': Split pre_tokenizer has no pattern."));
                if (!Enum.TryParse(p.Str("behavior"), out SplitBehavior behavior))
                    throw Unsupported(path, $"Split behavior '{p.Str("behavior")}'");
                steps.Add(new SplitStep(CompileRegex(path, regex), behavior));
                break;
            case "Digits":
                steps.Add(new SplitStep(new Regex(p.Bool("individual_digits") == true ? @"\p{N}" : @"\p{N}+", RegexOptions.Compiled), SplitBehavior.Isolated));
                break;
            default:
                throw Unsupported(path, $"pre_tokenizer '{p.Str("type")}'");
        }
    }

    private static Regex CompileRegex(string path, string pattern)
    {
        // HF uses Oniguruma; the patterns of GPT-2, Llama 3, Qwen2 and SmolLM are valid .NET regexes too.
        // CultureInvariant: their (?i:'s|'t...) must not fold case by the machine's culture (Turkish i).
        try { return new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant); }
        catch (ArgumentException ex) { throw new PeftSharpException($"'{path}': Split pattern is not a regex .NET can run ({JsonFile.OneLine(ex.Message)})", ex); }
    }

    private static void AddNormalizer(string path, JsonElement? normalizer, List<NormalizationForm> forms)
    {
        if (normalizer is not { } n) return;
        switch (n.Str("type"))
        {
            case "Sequence":
                foreach (var inner in n.Prop("normalizers").Items()) AddNormalizer(path, inner, forms);
                break;
            case "NFC": forms.Add(NormalizationForm.FormC); break;
            case "NFD": forms.Add(NormalizationForm.FormD); break;
            case "NFKC": forms.Add(NormalizationForm.FormKC); break;
            case "NFKD": forms.Add(NormalizationForm.FormKD); break;
            default: throw Unsupported(path, $"normalizer '{n.Str("type")}'");
        }
    }

    private static PostTemplate ReadPostProcessor(string path, JsonElement? processor)
    {
        if (processor is not { } p) return PostTemplate.None;
        switch (p.Str("type"))
        {
            case "ByteLevel": // only fixes offsets
                return PostTemplate.None;
            case "Sequence":
                // Each processor wraps what the previous ones produced.
                var result = PostTemplate.None;
                foreach (var inner in p.Prop("processors").Items())
                {
                    var t = ReadPostProcessor(path, inner);
                    result = new PostTemplate([.. t.Prefix, .. result.Prefix], [.. result.Suffix, .. t.Suffix]);
                }
                return result;
            case "TemplateProcessing":
                return ReadTemplate(path, p);
            case "RobertaProcessing" or "BertProcessing": // <cls> $A <sep>, the tokens given as [content, id]
                return new PostTemplate([IdOfPair(path, p, "cls")], [IdOfPair(path, p, "sep")]);
            default:
                throw Unsupported(path, $"post_processor '{p.Str("type")}'");
        }
    }

    private static int IdOfPair(string path, JsonElement p, string name) =>
        p.Prop(name) is { ValueKind: JsonValueKind.Array } pair && pair.GetArrayLength() == 2 && pair[1].ValueKind == JsonValueKind.Number
            ? pair[1].GetInt32()
            : throw new PeftSharpException($"'{path}': post_processor.{name} must be [token, id].");

    // The "single" template, e.g. [{"SpecialToken": {"id": "<|begin_of_text|>"}}, {"Sequence": {"id": "A"}}]:
    // special tokens before the sequence are the prefix, those after it the suffix.
    private static PostTemplate ReadTemplate(string path, JsonElement p)
    {
        if (p.Prop("single") is not { ValueKind: JsonValueKind.Array } single)
            throw new PeftSharpException($"'{path}': TemplateProcessing has no single template.");
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        foreach (var piece in single.EnumerateArray())
        {
            if (piece.Prop("Sequence") is not null) { seenSequence = true; continue; }
            string? name = piece.Prop("SpecialToken")?.Str("id");
            var ids = name is null ? null : p.Prop("special_tokens")?.Prop(name)?.Prop("ids");
            if (ids is not { ValueKind: JsonValueKind.Array } idArray)
                throw new PeftSharpException($"'{path}': TemplateProcessing piece {piece.GetRawText()} names no known special token.");
            (seenSequence ? suffix : prefix).AddRange(idArray.EnumerateArray().Select(x => x.GetInt32()));
        }
        return new PostTemplate([.. prefix], [.. suffix]);
    }

    // Whether a component (or, for a Sequence, any of its parts) has the given type.
    private static bool Contains(JsonElement? e, string partsKey, string type) => e is { } x &&
        (x.Str("type") == type || (x.Str("type") == "Sequence" && x.Prop(partsKey).Items().Any(p => Contains(p, partsKey, type))));

    // Whether a component is of the given type, or a Sequence of only such components.
    private static bool IsOnly(JsonElement e, string partsKey, string type) =>
        e.Str("type") == type || (e.Str("type") == "Sequence" && e.Prop(partsKey).Items().All(p => IsOnly(p, partsKey, type)));

    private static PeftSharpException Unsupported(string path, string what) =>
        new($"'{path}' uses {what}, which PeftSharp's tokenizer loader does not support.");

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;
}
