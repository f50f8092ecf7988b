using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary><c>peftsharp evaluate</c> and <c>peftsharp data</c> end to end: JSON shapes, files written, user errors.</summary>
public class EvaluateCliTests
{
    static string Sample(string task) => Path.Combine(AppContext.BaseDirectory, "Evaluation", "Data", "llm-adapters", task, "test.json");

    [Fact]
    public void PredictionsAreScoredWithoutAModel()
    {
        using var dir = new TempDir();
        // gsm8k sample golds: 576.0, 3.0... read them to build right and wrong answers.
        var golds = JsonDocument.Parse(File.ReadAllText(Sample("gsm8k"))).RootElement.EnumerateArray().Select(e => e.GetProperty("answer").GetString()!).ToList();
        var lines = new[]
        {
            $"Step 1 gives 12, so the answer is {double.Parse(golds[0], System.Globalization.CultureInfo.InvariantCulture):#,0.##}.", // right, with a thousands comma
            "I cannot tell.",                                   // no number: wrong
            $"The answer is {golds[2]}\n### Response: 99999",   // right: cut at the second marker
        };
        dir.Write("pred.jsonl", string.Join('\n', lines.Select(l => JsonSerializer.Serialize(new { generation = l }))) + "\n");
        var r = CliRunner.Run("evaluate", "--task", "gsm8k", "--data", Sample("gsm8k"), "--predictions", dir.File("pred.jsonl"),
                              "--output", dir.File("out.jsonl"), "--report", dir.File("report.md"), "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        Assert.Equal(["task", "n", "correct", "accuracy"], json.EnumerateObject().Select(p => p.Name));
        Assert.Equal("gsm8k", json.GetProperty("task").GetString());
        Assert.Equal(3, json.GetProperty("n").GetInt32());
        Assert.Equal(2, json.GetProperty("correct").GetInt32());
        Assert.Equal(2 / 3.0, json.GetProperty("accuracy").GetDouble(), 12);
        var items = File.ReadAllLines(dir.File("out.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(3, items.Count);
        Assert.Equal(["index", "prompt", "gold", "prediction", "correct", "generation"], items[0].EnumerateObject().Select(p => p.Name));
        Assert.Equal("inf", items[1].GetProperty("prediction").GetString());
        Assert.True(File.Exists(dir.File("report.png")));
        Assert.Contains("| gsm8k | 3 |", File.ReadAllText(dir.File("report.md")));
    }

    [Fact]
    public void UserErrorsExitWithOneLine()
    {
        using var dir = new TempDir();
        var unknown = CliRunner.AssertUserError(CliRunner.Run("evaluate", "--task", "boolqq", "--data", Sample("boolq"), "--predictions", "x"));
        Assert.Contains("known tasks: boolq, piqa", unknown);
        dir.Write("bad.jsonl", "{\"generation\": \"a\"}\n{\"gen\": 1}\n");
        var bad = CliRunner.AssertUserError(CliRunner.Run("evaluate", "--task", "boolq", "--data", Sample("boolq"), "--predictions", dir.File("bad.jsonl")));
        Assert.Contains($"{dir.File("bad.jsonl")}:2:", bad);
        dir.Write("short.jsonl", "{\"generation\": \"true\"}\n");
        Assert.Contains("1 generations for 4 items", CliRunner.AssertUserError(
            CliRunner.Run("evaluate", "--task", "boolq", "--data", Sample("boolq"), "--predictions", dir.File("short.jsonl"))));
        dir.Write("broken.json", "[\n {\"instruction\": \"q\", \"answer\": \"true\"},\n {\"instruction\": \"q\" \"answer\": \"x\"}\n]");
        Assert.Contains($"{dir.File("broken.json")}:3:", CliRunner.AssertUserError(
            CliRunner.Run("evaluate", "--task", "boolq", "--data", dir.File("broken.json"), "--predictions", dir.File("short.jsonl"))));
    }

    [Fact]
    public void LoglikModeOnATinyModelReportsAccNorm()
    {
        var config = new NaiveGpt2Config { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 128 };
        var model = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(model, config, new TinyGpt2Options { Seed = 43, BosTokenId = TinyBpe.EndOfText, EosTokenId = TinyBpe.EndOfText });
        File.WriteAllText(Path.Combine(model, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        using var dir = new TempDir();
        var r = CliRunner.Run("evaluate", "--task", "boolq", "--data", Sample("boolq"), "--model", model, "--mode", "loglik",
                              "--output", dir.File("out.jsonl"), "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        Assert.Equal(["task", "n", "correct", "accuracy", "acc_norm"], json.EnumerateObject().Select(p => p.Name));
        var item = JsonDocument.Parse(File.ReadLines(dir.File("out.jsonl")).First()).RootElement;
        Assert.Equal(["true", "false"], item.GetProperty("choices").EnumerateArray().Select(c => c.GetString()));
        Assert.Equal(2, item.GetProperty("loglikelihoods").GetArrayLength());
        Assert.Contains("has no answer options to score", CliRunner.AssertUserError(
            CliRunner.Run("evaluate", "--task", "math", "--data", Path.GetDirectoryName(Path.GetDirectoryName(Sample("gsm8k")))!, "--model", model, "--mode", "loglik")));
    }

    [Fact]
    public void DataCleanWritesANewFileAndNeverTheInput()
    {
        using var dir = new TempDir();
        const string input = "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\"}\n";
        dir.Write("in.jsonl", input);
        var r = CliRunner.Run("data", "clean", dir.File("in.jsonl"), "--output", dir.File("out.jsonl"), "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(1, r.Json().GetProperty("removed").GetProperty("exact_duplicate").GetInt32());
        Assert.Equal(1, r.Json().GetProperty("removed").GetProperty("missing_reply").GetInt32());
        Assert.Equal("{\"prompt\": \"a\", \"completion\": \"b\"}\n", File.ReadAllText(dir.File("out.jsonl")));
        Assert.Equal(input, File.ReadAllText(dir.File("in.jsonl")));
        CliRunner.AssertUserError(CliRunner.Run("data", "clean", dir.File("in.jsonl"), "--output", dir.File("in.jsonl")));
        Assert.Equal(input, File.ReadAllText(dir.File("in.jsonl")));
    }
}
