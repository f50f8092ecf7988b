using System.Text;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>
/// Characters outside the Basic Multilingual Plane split as code points (as Hugging Face does), and tokenizer.json
/// files converted from SentencePiece (no tokenizer.model) run on their own; expected ids are worked out by hand.
/// </summary>
public class CodePointAndByteFallbackTests
{
    static string Spell(string text) => string.Concat(Encoding.UTF8.GetBytes(text).Select(b => TinyBpe.ByteSymbols[b]));

    static ModelTokenizer Load(Dictionary<string, object?> json, object? config = null)
    {
        using var dir = new TempDir();
        dir.WriteJson("tokenizer.json", json);
        if (config is not null) dir.WriteJson("tokenizer_config.json", config);
        return ModelTokenizer.Load(dir.Path);
    }

    [Fact]
    public void Letters_and_symbols_outside_the_bmp_are_one_character_each_for_the_split_regex()
    {
        // With ignore_merges, a piece found whole in the vocabulary is one id: so the ids show where the regex cut.
        // GPT-2's regex on code points: "a𝐀" is ` ?\p{L}+` (𝐀 is a letter), " 😀!" is ` ?[^\s\p{L}\p{N}]+`.
        // On UTF-16 units 𝐀 would be two surrogates (category Cs) and "a𝐀" would split into "a" | "𝐀".
        var vocab = TinyBpe.Vocab(Spell("a𝐀"), Spell(" 😀!"));
        var tok = Load(TinyBpe.TokenizerJson(ignoreMerges: true, vocab: vocab));
        Assert.Equal([vocab[Spell("a𝐀")], vocab[Spell(" 😀!")]], tok.Encode("a𝐀 😀!"));
    }

    [Fact]
    public void Digits_outside_the_bmp_are_counted_as_digits()
    {
        // Llama 3's \p{N}{1,3}: the mathematical digits 𝟏𝟐𝟑𝟒 (U+1D7CF...) are three digits and one.
        var pre = new
        {
            type = "Sequence",
            pretokenizers = new object[]
            {
                new { type = "Split", pattern = new { Regex = @"\p{N}{1,3}" }, behavior = "Isolated", invert = false },
                TinyBpe.ByteLevelPreTokenizer(useRegex: false),
            },
        };
        var vocab = TinyBpe.Vocab(Spell("𝟏𝟐𝟑"));
        var tok = Load(TinyBpe.TokenizerJson(preTokenizer: pre, ignoreMerges: true, vocab: vocab));
        int[] lastDigitBytes = [.. Encoding.UTF8.GetBytes("𝟒").Select(b => vocab[TinyBpe.ByteSymbols[b]])];
        Assert.Equal([vocab[Spell("𝟏𝟐𝟑")], .. lastDigitBytes], tok.Encode("𝟏𝟐𝟑𝟒"));
    }

    [Fact]
    public void Gpt2_vocab_and_merges_folder_reads_endoftext_in_text_as_the_special_token()
    {
        using var dir = new TempDir();
        var vocab = TinyBpe.Vocab("<|endoftext|>");
        dir.WriteJson("vocab.json", vocab);
        dir.Write("merges.txt", "#version: 0.2\n" + string.Join("\n", TinyBpe.Merges.Select(m => $"{m.A} {m.B}")) + "\n");
        var tok = ModelTokenizer.Load(dir.Path); // no tokenizer_config.json, no config.json: GPT2Tokenizer's defaults
        int eot = vocab["<|endoftext|>"];
        Assert.Equal([.. TinyBpe.Ids("hello"), eot, .. TinyBpe.Ids("Ġworld")], tok.Encode("hello<|endoftext|> world"));
        Assert.Equal(eot, tok.EosTokenId);
        Assert.Equal("hello world", tok.Decode(tok.Encode("hello<|endoftext|> world"), skipSpecialTokens: true));
    }

    // A Llama-2-style tokenizer.json: <unk> <s> </s>, the 256 byte tokens, then characters and merged pieces.
    static readonly string[] Pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "▁he", "ll", "▁hell", "▁hello", "▁w", "or", "▁wor", "ld", "▁world"];
    static readonly (string, string)[] SpMerges = [("▁", "h"), ("▁h", "e"), ("l", "l"), ("▁he", "ll"), ("▁hell", "o"), ("▁", "w"), ("o", "r"), ("▁w", "or"), ("l", "d"), ("▁wor", "ld")];
    const int Byte0 = 3;
    static int Id(string piece) => Byte0 + 256 + Array.IndexOf(Pieces, piece);

    static Dictionary<string, object?> SentencePieceJson(bool legacyNormalizer)
    {
        var vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int b = 0; b < 256; b++) vocab[$"<0x{b:X2}>"] = Byte0 + b;
        foreach (var p in Pieces) vocab[p] = Id(p);
        return new()
        {
            ["added_tokens"] = new object[]
            {
                new { id = 0, content = "<unk>", special = true, normalized = false },
                new { id = 1, content = "<s>", special = true, normalized = false },
                new { id = 2, content = "</s>", special = true, normalized = false },
            },
            // Llama 2's files: Prepend + Replace normalizer, no pre-tokenizer; newer ones: Metaspace with prepend_scheme "first".
            ["normalizer"] = legacyNormalizer
                ? new { type = "Sequence", normalizers = new object[] { new { type = "Prepend", prepend = "▁" }, new { type = "Replace", pattern = new { String = " " }, content = "▁" } } }
                : null,
            ["pre_tokenizer"] = legacyNormalizer ? null : new { type = "Metaspace", replacement = "▁", prepend_scheme = "first", split = false },
            ["decoder"] = new
            {
                type = "Sequence",
                decoders = new object[]
                {
                    new { type = "Replace", pattern = new { String = "▁" }, content = " " }, new { type = "ByteFallback" }, new { type = "Fuse" },
                    new { type = "Strip", content = " ", start = 1, stop = 0 },
                },
            },
            ["model"] = new Dictionary<string, object?>
            {
                ["type"] = "BPE", ["unk_token"] = "<unk>", ["fuse_unk"] = true, ["byte_fallback"] = true,
                ["vocab"] = vocab, ["merges"] = SpMerges.Select(m => $"{m.Item1} {m.Item2}").ToArray(),
            },
        };
    }

    [Fact]
    public void Sentencepiece_tokenizer_json_loads_without_tokenizer_model()
    {
        var tok = Load(SentencePieceJson(legacyNormalizer: true), new { tokenizer_class = "LlamaTokenizer", bos_token = "<s>", eos_token = "</s>" });
        Assert.Equal([Id("▁hello"), Id("▁world")], tok.Encode("hello world", addSpecialTokens: false));
        Assert.Equal([1, Id("▁hello")], tok.Encode("hello")); // LlamaTokenizer: add_bos_token defaults to true
        // 'i' is no piece: its byte <0x69>; 😀 is F0 9F 98 80.
        Assert.Equal([Id("▁h"), Byte0 + 0x69, Byte0 + 0xF0, Byte0 + 0x9F, Byte0 + 0x98, Byte0 + 0x80], tok.Encode("hi😀", addSpecialTokens: false));
        // Two spaces: one word "▁hello▁▁world"; "▁ h" ranks before "▁ w", so the first ▁ joins h and the third joins w.
        Assert.Equal([Id("▁hello"), Id("▁"), Id("▁world")], tok.Encode("hello  world", addSpecialTokens: false));
        // The legacy normalizer prepends ▁ to the text after an added token too.
        Assert.Equal([1, Id("▁hello")], tok.Encode("<s>hello", addSpecialTokens: false));
        Assert.Equal("hello hi😀", tok.Decode(tok.Encode("hello hi😀").Skip(1), skipSpecialTokens: true));
        Assert.Equal("▁hello", tok.IdToToken(Id("▁hello")));
    }

    [Fact]
    public void Metaspace_first_prepends_only_at_the_start_of_the_text()
    {
        var tok = Load(SentencePieceJson(legacyNormalizer: false), new { tokenizer_class = "LlamaTokenizerFast", add_bos_token = false, add_eos_token = true, eos_token = "</s>" });
        Assert.Equal([Id("▁hello"), 2], tok.Encode("hello"));
        Assert.Equal([1, Id("h"), Id("e"), Id("ll"), Id("o")], tok.Encode("<s>hello", addSpecialTokens: false));
    }
}
