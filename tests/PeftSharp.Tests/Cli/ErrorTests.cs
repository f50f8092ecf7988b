using PeftSharp.Tests.Reference;

namespace PeftSharp.Tests.Cli;

/// <summary>User mistakes get one line naming the file, tensor or flag, a non-zero exit code and no stack trace.</summary>
public class ErrorTests
{
    static string TinyGpt2(out TinyCheckpoint ckpt)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        ckpt = TinyCheckpoints.WriteGpt2(dir, new NaiveGpt2Config());
        File.WriteAllText(Path.Combine(dir, "text.txt"), "hello");
        return dir;
    }

    [Fact]
    public void MissingModelFolder()
    {
        var line = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", "/nonexistent/model", "--text", "x.txt"));
        Assert.Contains("/nonexistent/model", line);
    }

    [Fact]
    public void MissingTokenizerNamesTheFilesLookedFor()
    {
        var dir = TinyGpt2(out _);
        var line = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", Path.Combine(dir, "text.txt")));
        Assert.Contains("tokenizer.json", line);
        Assert.Contains("tokenizer.model", line);
    }

    [Fact]
    public void UnknownModelType()
    {
        var dir = TinyGpt2(out var ckpt);
        File.WriteAllText(ckpt.ConfigPath, ckpt.ConfigJson.Replace("\"gpt2\"", "\"gptx\""));
        var line = CliRunner.AssertUserError(CliRunner.Run("generate", "--model", dir, "--prompt", "hi"));
        Assert.Contains("gptx", line);
        Assert.Contains("config.json", line);
    }

    [Fact]
    public void TruncatedCheckpoint()
    {
        var dir = TinyGpt2(out var ckpt);
        new TokenizerFolder(dir).Write();
        var bytes = File.ReadAllBytes(ckpt.WeightsPath);
        File.WriteAllBytes(ckpt.WeightsPath, bytes[..(bytes.Length / 2)]);
        var line = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", Path.Combine(dir, "text.txt")));
        Assert.Contains("model.safetensors", line);
    }

    [Fact]
    public void BadDTypeFlag()
    {
        var dir = TinyGpt2(out _);
        var line = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", Path.Combine(dir, "text.txt"), "--dtype", "float16"));
        Assert.Contains("--dtype", line);
    }

    [Fact]
    public void MissingTextFile()
    {
        var dir = TinyGpt2(out _);
        new TokenizerFolder(dir).Write();
        var line = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", Path.Combine(dir, "nope.txt")));
        Assert.Contains("nope.txt", line);
    }

    sealed class TokenizerFolder(string dir)
    {
        public void Write() => File.WriteAllText(Path.Combine(dir, "tokenizer.json"),
            System.Text.Json.JsonSerializer.Serialize(PeftSharp.Tests.Tokenization.TinyBpe.TokenizerJson()));
    }
}
