using Microsoft.ML.Tokenizers;
using PeftSharp.Tokenization;
using static PeftSharp.Tests.Tokenization.TinySentencePiece;

namespace PeftSharp.Tests.Tokenization;

public class SentencePieceTests
{
    private static ModelTokenizer Load(object? tokenizerConfig = null)
    {
        using var dir = new TempDir();
        Write(dir.File("tokenizer.model"));
        if (tokenizerConfig is not null) dir.WriteJson("tokenizer_config.json", tokenizerConfig);
        return ModelTokenizer.Load(dir.Path);
    }

    [Fact]
    public void Prepends_bos_and_merges_by_score()
    {
        var tok = Load();
        Assert.IsAssignableFrom<SentencePieceTokenizer>(tok.Inner);
        // "▁hello▁world": ll(-1), ▁h(-2), ▁he(-3), ▁hell(-4), ▁hello(-5) / ▁w(-6), or(-7), ▁wor(-8), ▁worl(-9), ▁world(-10).
        Assert.Equal([Bos, IdOf("▁hello"), IdOf("▁world")], tok.Encode("hello world"));
        Assert.Equal([IdOf("▁hello"), IdOf("▁world")], tok.Encode("hello world", addSpecialTokens: false));
        Assert.Equal(Bos, tok.BosTokenId);
        Assert.Equal(Eos, tok.EosTokenId);
        Assert.Null(tok.PadTokenId);
        Assert.Equal(3 + 256 + Words.Length, tok.VocabSize);
    }

    [Fact]
    public void Unknown_characters_fall_back_to_utf8_bytes()
    {
        var tok = Load();
        // "▁hi!": ▁h is a piece; 'i' and '!' are not, so they become <0x69> and <0x21>.
        Assert.Equal([Bos, IdOf("▁h"), FirstByte + 0x69, FirstByte + 0x21], tok.Encode("hi!"));
        // é is C3 A9 in UTF-8.
        Assert.Equal([Bos, IdOf("▁"), FirstByte + 0xC3, FirstByte + 0xA9], tok.Encode("é"));
    }

    [Theory]
    [InlineData("hello world")]
    [InlineData("hi! é 😀 中文")]
    [InlineData("hello  world\nnext line")]
    public void Decode_round_trips(string text)
    {
        var tok = Load();
        Assert.Equal(text, tok.Decode(tok.Encode(text), skipSpecialTokens: true));
    }

    [Fact]
    public void Config_flags_control_bos_and_eos()
    {
        var tok = Load(new { add_bos_token = false, add_eos_token = true, bos_token = "<s>", eos_token = "</s>", tokenizer_class = "LlamaTokenizer" });
        Assert.Equal([IdOf("▁hello"), Eos], tok.Encode("hello"));
    }

    [Fact]
    public void Named_special_token_in_text_is_one_id()
    {
        var tok = Load(new { bos_token = new { content = "<s>", special = true }, eos_token = "</s>", unk_token = "<unk>" });
        Assert.Equal([Bos, IdOf("▁hello"), Eos], tok.Encode("hello</s>"));
        Assert.Equal([Bos, Bos, IdOf("▁hello")], tok.Encode("<s>hello"));
    }

    [Fact]
    public void Non_byte_level_tokenizer_json_falls_back_to_tokenizer_model()
    {
        using var dir = new TempDir();
        Write(dir.File("tokenizer.model"));
        // Llama 2's tokenizer.json: a SentencePiece-style BPE with a Metaspace pre-tokenizer (or none).
        dir.WriteJson("tokenizer.json", new
        {
            version = "1.0",
            added_tokens = new object[] { new { id = 0, content = "<unk>", special = true } },
            pre_tokenizer = new { type = "Metaspace", replacement = "▁", prepend_scheme = "first", split = false },
            model = new { type = "BPE", vocab = new Dictionary<string, int> { ["<unk>"] = 0 }, merges = Array.Empty<string>(), byte_fallback = true },
        });
        var tok = ModelTokenizer.Load(dir.Path);
        Assert.IsAssignableFrom<SentencePieceTokenizer>(tok.Inner);
        Assert.Equal([Bos, IdOf("▁hello"), IdOf("▁world")], tok.Encode("hello world"));
    }
}
