using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

public class LoadErrorTests
{
    [Fact]
    public void Missing_files_are_listed_with_the_folder()
    {
        using var dir = new TempDir();
        dir.Write("merges.txt", "#version: 0.2\n"); // half of a pair does not count
        var ex = Assert.Throws<PeftSharpException>(() => ModelTokenizer.Load(dir.Path));
        Assert.Contains(dir.Path, ex.Message);
        Assert.Contains("tokenizer.json", ex.Message);
        Assert.Contains("vocab.json + merges.txt", ex.Message);
        Assert.Contains("tokenizer.model", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Theory]
    [InlineData("tokenizer.json")]
    [InlineData("tokenizer_config.json")]
    public void Corrupt_json_names_the_file(string corrupt)
    {
        using var dir = new TempDir();
        dir.WriteJson("tokenizer.json", TinyBpe.TokenizerJson());
        dir.Write(corrupt, "{ \"model\": \n { oops");
        var ex = Assert.Throws<PeftSharpException>(() => ModelTokenizer.Load(dir.Path));
        Assert.Contains(dir.File(corrupt), ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void Corrupt_sentencepiece_model_names_the_file()
    {
        using var dir = new TempDir();
        dir.Write("tokenizer.model", "IQ== 0\nIg== 1\n"); // a tiktoken file, not a SentencePiece protobuf
        var ex = Assert.Throws<PeftSharpException>(() => ModelTokenizer.Load(dir.Path));
        Assert.Contains(dir.File("tokenizer.model"), ex.Message);
    }

    [Fact]
    public void Unsupported_features_say_what_and_where()
    {
        using var dir = new TempDir();
        var json = TinyBpe.TokenizerJson(preTokenizer: new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true });
        dir.WriteJson("tokenizer.json", json);
        var ex = Assert.Throws<PeftSharpException>(() => ModelTokenizer.Load(dir.Path));
        Assert.Contains("add_prefix_space", ex.Message);
        Assert.Contains(dir.File("tokenizer.json"), ex.Message);

        // A merge whose result is not in the vocabulary (Microsoft.ML.Tokenizers' check) becomes our error.
        json = TinyBpe.TokenizerJson();
        ((Dictionary<string, object?>)json["model"]!)["merges"] = new[] { "x y" };
        dir.WriteJson("tokenizer.json", json);
        ex = Assert.Throws<PeftSharpException>(() => ModelTokenizer.Load(dir.Path));
        Assert.Contains(dir.File("tokenizer.json"), ex.Message);
    }
}
