using Microsoft.ML.Tokenizers;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

public class ByteLevelBpeTests
{
    private static ModelTokenizer LoadJson(Dictionary<string, object?> tokenizerJson, object? tokenizerConfig = null)
    {
        using var dir = new TempDir();
        dir.WriteJson("tokenizer.json", tokenizerJson);
        if (tokenizerConfig is not null) dir.WriteJson("tokenizer_config.json", tokenizerConfig);
        return ModelTokenizer.Load(dir.Path); // everything is read eagerly, so the folder can go
    }

    [Fact]
    public void Ids_follow_merge_ranks_computed_by_hand()
    {
        var tok = LoadJson(TinyBpe.TokenizerJson());
        Assert.IsType<BpeTokenizer>(tok.Inner);

        // GPT-2 regex splits "hello world" into "hello" + " world"; merges: h+e, l+l, he+ll, hell+o / Ġ+w, o+r, Ġw+or, l+d, Ġwor+ld.
        Assert.Equal(TinyBpe.Ids("hello", "Ġworld"), tok.Encode("hello world"));
        // Without the leading space "the" cannot use Ġt: t | h+e.
        Assert.Equal(TinyBpe.Ids("t", "he"), tok.Encode("the"));
        Assert.Equal(TinyBpe.Ids("Ġthe"), tok.Encode(" the"));
        // "l l" ranks above "e l": e|ll|e, never el|l|e.
        Assert.Equal(TinyBpe.Ids("e", "ll", "e"), tok.Encode("elle"));
        // é is UTF-8 C3 A9, spelled "Ã©", which has a merge.
        Assert.Equal(TinyBpe.Ids("Ã©"), tok.Encode("é"));
        // Two spaces before a word: the regex gives " " then " b".
        Assert.Equal(TinyBpe.Ids("a", "Ġ", "Ġ", "b"), tok.Encode("a  b"));
    }

    [Theory]
    [InlineData("hello world")]
    [InlineData("the elle held the world")]
    [InlineData("  leading and trailing spaces   ")]
    [InlineData("tabs\tand\nnew\n\nlines\r\n")]
    [InlineData("héllo wörld, café")]
    [InlineData("emoji 😀👍🏽 ok")]
    [InlineData("中文字符 and 日本語")]
    [InlineData("it's 12345 o'clock!!")]
    [InlineData("")]
    public void Matches_reference_bpe_and_round_trips(string text)
    {
        var tok = LoadJson(TinyBpe.TokenizerJson());
        var ids = tok.Encode(text);
        Assert.Equal(TinyBpe.ReferenceEncode(text), ids);
        Assert.Equal(text, tok.Decode(ids));
    }

    [Fact]
    public void Pair_form_merges_and_vocab_json_with_merges_txt_give_the_same_ids()
    {
        const string text = "hello world, the elle é 😀\n\n  end";
        var expected = TinyBpe.ReferenceEncode(text);
        Assert.Equal(expected, LoadJson(TinyBpe.TokenizerJson(pairMerges: true)).Encode(text));

        using var dir = new TempDir();
        TinyBpe.WriteVocabAndMerges(dir);
        var slow = ModelTokenizer.Load(dir.Path);
        Assert.Equal(expected, slow.Encode(text));
        Assert.Equal(text, slow.Decode(slow.Encode(text)));
        Assert.Equal(TinyBpe.Vocab().Count, slow.VocabSize);
    }

    [Fact]
    public void Added_tokens_in_text_are_one_id_each_and_decode_verbatim()
    {
        var tok = LoadJson(TinyBpe.TokenizerJson());
        var ids = tok.Encode("hi<|endoftext|>the<tool> world");

        var expected = TinyBpe.ReferenceEncode("hi").Append(TinyBpe.EndOfText)
            .Concat(TinyBpe.ReferenceEncode("the")).Append(TinyBpe.Tool).Concat(TinyBpe.ReferenceEncode(" world"));
        Assert.Equal(expected, ids);
        Assert.Equal("hi<|endoftext|>the<tool> world", tok.Decode(ids));
        // Only special added tokens are skipped; <tool> is added but not special.
        Assert.Equal("hithe<tool> world", tok.Decode(ids, skipSpecialTokens: true));
        // A partial special token is ordinary text.
        Assert.DoesNotContain(TinyBpe.EndOfText, tok.Encode("<|endoftext|"));
    }

    [Fact]
    public void Gpt2_style_folder_adds_nothing()
    {
        var tok = LoadJson(TinyBpe.TokenizerJson(), new { model_max_length = 1024 });
        Assert.Equal(tok.Encode("hello", addSpecialTokens: false), tok.Encode("hello"));
        Assert.Null(tok.BosTokenId); // no tokenizer_class, no config.json: nothing is named
    }

    [Fact]
    public void Template_processing_prepends_bos()
    {
        var config = new { bos_token = new { content = "<|begin_of_text|>", lstrip = false }, eos_token = "<|endoftext|>", tokenizer_class = "PreTrainedTokenizerFast" };
        var tok = LoadJson(TinyBpe.TokenizerJson(postProcessor: TinyBpe.BosTemplate()), config);

        Assert.Equal([TinyBpe.BeginOfText, .. TinyBpe.Ids("hello")], tok.Encode("hello"));
        Assert.Equal(TinyBpe.Ids("hello"), tok.Encode("hello", addSpecialTokens: false));
        Assert.Equal([TinyBpe.BeginOfText], tok.Encode(""));
        Assert.Equal(TinyBpe.BeginOfText, tok.BosTokenId);
        Assert.Equal(TinyBpe.EndOfText, tok.EosTokenId);
        Assert.Equal("<|begin_of_text|>hello", tok.Decode(tok.Encode("hello")));
        Assert.Equal("hello", tok.Decode(tok.Encode("hello"), skipSpecialTokens: true));

        // Llama 3 wraps it in a Sequence after a ByteLevel post-processor.
        var sequence = new { type = "Sequence", processors = new object[] { new { type = "ByteLevel", add_prefix_space = true, trim_offsets = false, use_regex = true }, TinyBpe.BosTemplate() } };
        Assert.Equal([TinyBpe.BeginOfText, .. TinyBpe.Ids("hello")], LoadJson(TinyBpe.TokenizerJson(postProcessor: sequence)).Encode("hello"));
    }

    [Fact]
    public void Llama_tokenizer_class_rebuilds_the_template_from_add_bos_and_add_eos()
    {
        var config = new { tokenizer_class = "LlamaTokenizerFast", bos_token = "<|begin_of_text|>", eos_token = "<|endoftext|>", add_bos_token = false, add_eos_token = true };
        var tok = LoadJson(TinyBpe.TokenizerJson(postProcessor: TinyBpe.BosTemplate()), config);
        Assert.Equal([.. TinyBpe.Ids("hello"), TinyBpe.EndOfText], tok.Encode("hello"));

        // Without the flags LlamaTokenizerFast still adds BOS (its default) even with no post_processor in the file.
        var defaults = LoadJson(TinyBpe.TokenizerJson(), new { tokenizer_class = "LlamaTokenizerFast", bos_token = "<|begin_of_text|>" });
        Assert.Equal([TinyBpe.BeginOfText, .. TinyBpe.Ids("hello")], defaults.Encode("hello"));
    }

    [Fact]
    public void Llama3_style_split_pattern_then_byte_level_without_regex()
    {
        const string llama3 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        var pre = new
        {
            type = "Sequence",
            pretokenizers = new object[]
            {
                new { type = "Split", pattern = new { Regex = llama3 }, behavior = "Isolated", invert = false },
                TinyBpe.ByteLevelPreTokenizer(useRegex: false),
            },
        };
        var tok = LoadJson(TinyBpe.TokenizerJson(preTokenizer: pre));
        // Digits go in groups of three: "12345" is "123" + "45", not one GPT-2 number run.
        Assert.Equal(TinyBpe.ReferenceEncode("123").Concat(TinyBpe.ReferenceEncode("45")), tok.Encode("12345"));
        Assert.Equal(TinyBpe.ReferenceEncode("12345"), LoadJson(TinyBpe.TokenizerJson()).Encode("12345")); // GPT-2 keeps them together, same bytes
        Assert.Equal(TinyBpe.Ids("hello", "Ġworld"), tok.Encode("hello world"));
        foreach (var text in new[] { "Hello, World!\n\n  x", "IT'S 😀 中文\r\n" })
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Fact]
    public void Nfc_normalizer_composes_before_bpe()
    {
        var tok = LoadJson(TinyBpe.TokenizerJson(normalizer: new { type = "NFC" }));
        Assert.Equal(TinyBpe.Ids("Ã©"), tok.Encode("e\u0301")); // e + combining acute → é
    }

    [Fact]
    public void Ignore_merges_takes_whole_words_from_the_vocabulary()
    {
        // "Ġxyz" is in the vocabulary but no merge produces it.
        var vocab = TinyBpe.Vocab("Ġxyz");
        Assert.Equal([vocab["Ġxyz"]], LoadJson(TinyBpe.TokenizerJson(ignoreMerges: true, vocab: vocab)).Encode(" xyz"));
        Assert.Equal(TinyBpe.Ids("Ġ", "x", "y", "z"), LoadJson(TinyBpe.TokenizerJson(ignoreMerges: false, vocab: vocab)).Encode(" xyz"));
        // Words not in the vocabulary still go through the merges.
        Assert.Equal(TinyBpe.Ids("hello", "Ġworld"), LoadJson(TinyBpe.TokenizerJson(ignoreMerges: true, vocab: vocab)).Encode("hello world"));
    }

    [Fact]
    public void Config_special_tokens_chat_template_and_vocab_size()
    {
        var config = new Dictionary<string, object?>
        {
            ["bos_token"] = "<|begin_of_text|>",
            ["eos_token"] = new { content = "<|endoftext|>", special = true },
            ["pad_token"] = "<pad>",
            ["added_tokens_decoder"] = new Dictionary<string, object> { ["1003"] = new { content = "<pad>", special = true } },
            ["chat_template"] = new object[] { new { name = "tool_use", template = "T" }, new { name = "default", template = "{{ messages }}" } },
        };
        var tok = LoadJson(TinyBpe.TokenizerJson(), config);
        Assert.Equal(TinyBpe.BeginOfText, tok.BosTokenId);
        Assert.Equal(TinyBpe.EndOfText, tok.EosTokenId);
        Assert.Equal(1003, tok.PadTokenId);
        Assert.Equal("{{ messages }}", tok.ChatTemplate);
        Assert.Equal(TinyBpe.Vocab().Count + 4, tok.VocabSize); // 3 added tokens in tokenizer.json + <pad> from the config
        Assert.Equal([1003], tok.Encode("<pad>"));
    }

    [Fact]
    public void Gpt2_model_type_names_endoftext_as_bos_and_eos()
    {
        using var dir = new TempDir();
        TinyBpe.WriteVocabAndMerges(dir);
        dir.WriteJson("config.json", new { model_type = "gpt2" });
        // A default is used only when the vocabulary has it.
        Assert.Null(ModelTokenizer.Load(dir.Path).EosTokenId);

        dir.WriteJson("vocab.json", TinyBpe.Vocab("<|endoftext|>"));
        var tok = ModelTokenizer.Load(dir.Path);
        Assert.Equal(TinyBpe.Vocab("<|endoftext|>")["<|endoftext|>"], tok.EosTokenId);
        Assert.Equal(tok.EosTokenId, tok.BosTokenId);
        Assert.Equal(tok.Encode("hi", addSpecialTokens: false), tok.Encode("hi")); // GPT-2 adds nothing
        Assert.Equal([tok.EosTokenId!.Value], tok.Encode("<|endoftext|>"));
    }

    [Fact]
    public void Clean_up_tokenization_spaces_when_the_config_asks()
    {
        var tok = LoadJson(TinyBpe.TokenizerJson(), new { clean_up_tokenization_spaces = true });
        Assert.Equal("hello, world.", tok.Decode(tok.Encode("hello , world .")));
    }
}
