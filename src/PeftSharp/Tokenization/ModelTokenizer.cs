using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace PeftSharp.Tokenization;

/// <summary>
/// The tokenizer of a Hugging Face model folder, producing the ids transformers' AutoTokenizer would.
/// Tokenization itself is Microsoft.ML.Tokenizers' (<see cref="Inner"/>); this class reads the HF files,
/// adds the post-processor's BOS/EOS and knows the special tokens.
/// </summary>
/// <remarks>
/// Files, in the order transformers prefers them: tokenizer.json (byte-level BPE: GPT-2, Llama 3, Qwen2,
/// SmolLM), vocab.json + merges.txt (GPT-2 style), tokenizer.model (SentencePiece: Llama 2, Mistral). A
/// tokenizer.json that is not byte-level BPE (Llama 2's) is skipped in favour of tokenizer.model.
/// </remarks>
public sealed class ModelTokenizer
{
    private readonly PostTemplate _template;
    private readonly HashSet<int> _specialIds;
    private readonly IReadOnlyDictionary<string, int>? _wholeWordVocab; // set only for HF's ignore_merges
    private readonly bool _cleanUpSpaces;
    private readonly IReadOnlyDictionary<int, string> _idToToken;

    /// <summary>The Microsoft.ML.Tokenizers tokenizer doing the work. It matches added tokens but adds no BOS/EOS.</summary>
    public Tokenizer Inner { get; }

    /// <summary>The beginning-of-sequence token id, or null when the tokenizer has none.</summary>
    public int? BosTokenId { get; }
    /// <summary>The end-of-sequence token id, or null when the tokenizer has none.</summary>
    public int? EosTokenId { get; }
    /// <summary>The padding token id, or null when the tokenizer has none.</summary>
    public int? PadTokenId { get; }

    /// <summary>The Jinja chat template (chat_template.jinja, else tokenizer_config.json), if any.</summary>
    public string? ChatTemplate { get; }

    /// <summary>
    /// The named special tokens that are set, as transformers' <c>special_tokens_map</c>: "bos_token",
    /// "eos_token", "unk_token", "pad_token" to their text. Chat templates see these as variables.
    /// </summary>
    public IReadOnlyDictionary<string, string> SpecialTokens { get; }

    /// <summary>Distinct tokens including added ones: transformers' <c>len(tokenizer)</c> (not config.json's vocab_size, which may be padded).</summary>
    public int VocabSize { get; }

    private ModelTokenizer(Tokenizer inner, PostTemplate template, HashSet<int> specialIds, IReadOnlyDictionary<string, int>? wholeWordVocab,
                           TokenizerConfig config, int? bos, int? eos, int? pad, int vocabSize, IReadOnlyDictionary<string, string> specialTokens,
                           IReadOnlyDictionary<int, string> idToToken)
    {
        _idToToken = idToToken;
        SpecialTokens = specialTokens;
        Inner = inner;
        _template = template;
        _specialIds = specialIds;
        _wholeWordVocab = wholeWordVocab;
        _cleanUpSpaces = config.CleanUpTokenizationSpaces;
        ChatTemplate = config.ChatTemplate;
        BosTokenId = bos;
        EosTokenId = eos;
        PadTokenId = pad;
        VocabSize = vocabSize;
    }

    /// <summary>Loads the tokenizer of the model folder <paramref name="modelDir"/>.</summary>
    /// <exception cref="PeftSharpException">No tokenizer files, a corrupt file, or a feature that is not supported.</exception>
    public static ModelTokenizer Load(string modelDir)
    {
        ArgumentNullException.ThrowIfNull(modelDir);
        string json = Path.Combine(modelDir, "tokenizer.json"), vocab = Path.Combine(modelDir, "vocab.json"),
               merges = Path.Combine(modelDir, "merges.txt"), spm = Path.Combine(modelDir, "tokenizer.model");
        if (!File.Exists(json) && !(File.Exists(vocab) && File.Exists(merges)) && !File.Exists(spm))
            throw new PeftSharpException($"No tokenizer found in '{modelDir}': looked for tokenizer.json, vocab.json + merges.txt, tokenizer.model.");

        var config = TokenizerConfig.Load(modelDir);
        if (File.Exists(json))
        {
            var file = TokenizerJson.Read(json);
            if (file.NotByteLevelBpe is null) return FromTokenizerJson(file, config);
            // Llama 2, Mistral, Gemma: tokenizer.json re-expresses the SentencePiece model in tokenizer.model. SentencePiece
            // itself reads tokenizer.model when it is there; otherwise the converted BPE is run from tokenizer.json alone.
            if (File.Exists(spm)) return FromSentencePiece(spm, config, file.AddedTokens);
            if (file.IsByteFallbackBpe) return FromByteFallbackJson(file, config);
            throw new PeftSharpException($"'{json}' is a tokenizer PeftSharp cannot run ({file.NotByteLevelBpe}) and there is no tokenizer.model beside it to use instead.");
        }
        if (File.Exists(vocab) && File.Exists(merges)) return FromVocabAndMerges(vocab, merges, config);
        return FromSentencePiece(spm, config, []);
    }

    /// <summary>
    /// Token ids of <paramref name="text"/>. Added tokens written in the text (e.g. "&lt;|im_start|&gt;") become
    /// their single id. With <paramref name="addSpecialTokens"/>, BOS/EOS are added as transformers would for this folder.
    /// </summary>
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        if (addSpecialTokens) ids.AddRange(_template.Prefix);
        if (Inner is SentencePieceTokenizer sp) ids.AddRange(sp.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false));
        else if (Inner is ByteFallbackBpeTokenizer fb) ids.AddRange(fb.Encode(text));
        else if (_wholeWordVocab is null) ids.AddRange(Inner.EncodeToIds(text));
        else EncodeIgnoringMerges(text, ids);
        if (addSpecialTokens) ids.AddRange(_template.Suffix);
        return ids;
    }

    /// <summary>
    /// The vocabulary entry of <paramref name="id"/> as the files spell it (transformers' <c>convert_ids_to_tokens</c>:
    /// byte-level files write a space as "Ġ", SentencePiece ones as "▁"), or null for an id the tokenizer does not have.
    /// </summary>
    public string? IdToToken(int id) => _idToToken.GetValueOrDefault(id);

    /// <summary>Text of <paramref name="ids"/>; <paramref name="skipSpecialTokens"/> drops special tokens (BOS, EOS, pad, special added tokens).</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var kept = skipSpecialTokens ? ids.Where(id => !_specialIds.Contains(id)) : ids;
        // considerSpecialTokens: true writes added tokens verbatim; skipping is done above, by HF's rules.
        string text = Inner switch
        {
            BpeTokenizer bpe => bpe.Decode(kept, considerSpecialTokens: true),
            SentencePieceTokenizer sp => sp.Decode(kept, considerSpecialTokens: true),
            _ => Inner.Decode(kept) ?? "",
        };
        return _cleanUpSpaces ? CleanUpTokenizationSpaces(text) : text;
    }

    // HF's BPE ignore_merges (Llama 3): a pre-tokenized word that is itself in the vocabulary is that one
    // token, even where the merges would split it. BpeTokenizer has no such switch, so we check each word first.
    private void EncodeIgnoringMerges(string text, List<int> ids)
    {
        string normalized = Inner.Normalizer?.Normalize(text) ?? text;
        var added = ((BpeTokenizer)Inner).SpecialTokens;
        foreach (var (offset, length) in Inner.PreTokenizer!.PreTokenize(normalized))
        {
            string word = normalized.Substring(offset, length);
            if (added?.TryGetValue(word, out int id) == true || _wholeWordVocab!.TryGetValue(ByteLevelAlphabet.Encode(word), out id))
                ids.Add(id);
            else
                ids.AddRange(Inner.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
        }
    }

    // transformers' clean_up_tokenization, applied when tokenizer_config.json sets clean_up_tokenization_spaces.
    private static string CleanUpTokenizationSpaces(string text) => text
        .Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
        .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");

    private static ModelTokenizer FromTokenizerJson(TokenizerJson file, TokenizerConfig config) =>
        Build(config, file.Vocab, file.AddedTokens, DefaultNamedTokens(config), llamaRules: config.IsLlamaFamily, file.Template,
              file.CreateBpe, file.IgnoreMerges ? file.Vocab : null);

    private static ModelTokenizer FromByteFallbackJson(TokenizerJson file, TokenizerConfig config) =>
        Build(config, file.Vocab, file.AddedTokens, DefaultNamedTokens(config), llamaRules: config.IsLlamaFamily, file.Template,
              file.CreateByteFallbackBpe, wholeWordVocab: null);

    private static ModelTokenizer FromVocabAndMerges(string vocabPath, string mergesPath, TokenizerConfig config)
    {
        string source = $"'{vocabPath}' + merges.txt";
        BpeOptions options;
        try
        {
            options = new BpeOptions(vocabPath, mergesPath);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException)
        {
            throw new PeftSharpException($"{source}: {JsonFile.OneLine(ex.Message)}", ex);
        }
        var vocab = options.Vocabulary.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        // vocab.json + merges.txt is GPT-2's format: a folder that names no tokenizer class gets GPT2Tokenizer's
        // defaults (<|endoftext|> as bos/eos/unk, so that text written in the input is the special token).
        var named = config.TokenizerClass is null ? Gpt2Named : DefaultNamedTokens(config);
        return Build(config, vocab, [], named, llamaRules: config.IsLlamaFamily, PostTemplate.None, added =>
        {
            // What GPT2Tokenizer does: the GPT-2 split regex, then byte-level BPE.
            options.PreTokenizer = new HfPreTokenizer(added.Keys, [SplitStep.Gpt2()]);
            options.SpecialTokens = added.Count == 0 ? null : added;
            options.ByteLevel = true;
            return TokenizerJson.CreateByteLevelBpe(source, options);
        }, wholeWordVocab: null);
    }

    private static ModelTokenizer FromSentencePiece(string path, TokenizerConfig config, IReadOnlyList<AddedTokenInfo> fileAdded)
    {
        SentencePieceTokenizer Create(IReadOnlyDictionary<string, int>? added)
        {
            try
            {
                using var stream = File.OpenRead(path);
                // No BOS/EOS here: Encode adds them by the HF rules.
                return SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false, added);
            }
            catch (Exception ex) when (ex is not IOException and not UnauthorizedAccessException and not OutOfMemoryException)
            {
                throw new PeftSharpException($"'{path}' is not a SentencePiece model Microsoft.ML.Tokenizers can load: {JsonFile.OneLine(ex.Message)}", ex);
            }
        }

        // The vocabulary is needed to resolve the special tokens, which the tokenizer must be created with: load twice.
        var plain = Create(null);
        // Unnamed bos/eos/unk default to the model's own pieces (trainer_spec bos_piece...), as transformers does.
        var defaults = (plain.BeginningOfSentenceToken, plain.EndOfSentenceToken, plain.UnknownToken);
        // Slow LlamaTokenizer rules: add_bos_token defaults to true, add_eos_token to false.
        return Build(config, plain.Vocabulary, fileAdded, defaults, llamaRules: true, PostTemplate.None,
                     added => added.Count == 0 ? plain : Create(added), wholeWordVocab: null);
    }

    private static readonly (string?, string?, string?) Gpt2Named = ("<|endoftext|>", "<|endoftext|>", "<|endoftext|>");
    private static readonly (string?, string?, string?) LlamaNamed = ("<s>", "</s>", "<unk>");

    // The bos/eos/unk a tokenizer class assumes when the folder does not name them.
    private static (string? Bos, string? Eos, string? Unk) DefaultNamedTokens(TokenizerConfig config) =>
        config.IsGpt2Family ? Gpt2Named : config.IsLlamaFamily ? LlamaNamed : (null, null, null);

    private static ModelTokenizer Build(
        TokenizerConfig config, IReadOnlyDictionary<string, int> vocab, IEnumerable<AddedTokenInfo> fileAdded,
        (string? Bos, string? Eos, string? Unk) defaults, bool llamaRules, PostTemplate fileTemplate,
        Func<IReadOnlyDictionary<string, int>, Tokenizer> createInner, IReadOnlyDictionary<string, int>? wholeWordVocab)
    {
        // The file's added tokens first; tokenizer_config.json's added_tokens_decoder may add more.
        var added = new Dictionary<string, AddedTokenInfo>(StringComparer.Ordinal);
        foreach (var t in fileAdded.Concat(config.AddedTokens)) added.TryAdd(t.Content, t);

        int? IdOf(string? token) =>
            token is null ? null : added.TryGetValue(token, out var a) ? a.Id : vocab.TryGetValue(token, out int id) ? id : null;
        string? Named(string? configured, string? fallback) => configured ?? (IdOf(fallback) is null ? null : fallback);

        string? bos = Named(config.BosToken, defaults.Bos), eos = Named(config.EosToken, defaults.Eos),
                unk = Named(config.UnkToken, defaults.Unk), pad = config.PadToken;

        // transformers registers the named tokens as special added tokens: matched verbatim in text, dropped by skip_special_tokens.
        foreach (string? name in new[] { bos, eos, unk, pad })
            if (IdOf(name) is int id) added[name!] = new AddedTokenInfo(id, name!, Special: true);

        // Longest first: Microsoft.ML.Tokenizers' SentencePiece matches added tokens with an alternation in dictionary order.
        var addedIds = new Dictionary<string, int>(StringComparer.Ordinal);
        var usedIds = new HashSet<int>();
        foreach (var t in added.Values.OrderByDescending(t => t.Content.Length))
            if (usedIds.Add(t.Id)) addedIds[t.Content] = t.Id; // one text per id: the tokenizers map ids back to text

        PostTemplate template = fileTemplate;
        if (llamaRules || config.AddBosToken.HasValue || config.AddEosToken.HasValue)
        {
            // LlamaTokenizer(Fast) builds its template from these flags; transformers 5 does so for any class that sets them.
            bool addBos = config.AddBosToken ?? llamaRules, addEos = config.AddEosToken ?? false;
            template = new PostTemplate(addBos && IdOf(bos) is int b ? [b] : [], addEos && IdOf(eos) is int e ? [e] : []);
        }

        var idToToken = new Dictionary<int, string>();
        foreach (var (token, id) in addedIds) idToToken[id] = token;
        foreach (var (token, id) in vocab) idToToken.TryAdd(id, token);
        return new ModelTokenizer(
            createInner(addedIds), template,
            added.Values.Where(t => t.Special).Select(t => t.Id).ToHashSet(),
            wholeWordVocab, config, IdOf(bos), IdOf(eos), IdOf(pad),
            vocabSize: vocab.Count + added.Keys.Count(k => !vocab.ContainsKey(k)),
            specialTokens: new[] { ("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad) }
                .Where(t => t.Item2 is not null).ToDictionary(t => t.Item1, t => t.Item2!, StringComparer.Ordinal),
            idToToken);
    }
}
