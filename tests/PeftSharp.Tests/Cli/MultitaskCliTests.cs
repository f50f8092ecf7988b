using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// Task-conditioned methods through the command line: train --method mpt / hyperformer read "task_id" from the JSONL,
/// eval --task-id runs one task, hyperformer-export writes an adapter with the same NLL, bad task ids exit 1 with one line.
/// </summary>
public class MultitaskCliTests
{
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 1, NHead = 2, NPositions = 64 };

    static string Model()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 95 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "text.txt"), "the cat sat on the mat\n");
        var lines = new List<string>();
        for (int i = 0; i < 6; i++)
            lines.Add(JsonSerializer.Serialize(new Dictionary<string, object> { ["prompt"] = "Say: ", ["completion"] = i % 2 == 0 ? "hello world" : "HELLO WORLD", ["task_id"] = i % 2 }));
        File.WriteAllLines(Path.Combine(dir, "tasks.jsonl"), lines);
        File.WriteAllText(Path.Combine(dir, "bad.jsonl"), """{"prompt": "Say: ", "completion": "x", "task_id": 5}""" + "\n");
        return dir;
    }

    static double Nll(CliRunner.Result r) => r.Json().GetProperty("nll").GetDouble();

    [Fact]
    public void MptTrainsWithTaskIdsAndRefusesOutOfRangeIds()
    {
        var model = Model();
        string root = TinyCheckpoints.NewTempDirectory();
        string mpt = Path.Combine(root, "mpt");
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "tasks.jsonl"), "--out", mpt, "--method", "mpt",
            "--num-tasks", "2", "--num-ranks", "2", "--num-virtual-tokens", "3", "--steps", "2", "--batch-size", "2", "--seq-len", "24", "--lr", "0.05");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(["prefix_task_cols", "prefix_task_rows", "prompt_embeddings"], NaiveSafetensors.Read(Path.Combine(mpt, "adapter_model.safetensors")).Keys.Order().ToArray());
        var bad = CliRunner.Run("eval", "--model", model, "--adapter", mpt, "--task-id", "2", "--text", Path.Combine(model, "text.txt"));
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("task id 2 is out of range", bad.Stderr);
        Assert.Single(bad.Stderr.Trim().Split('\n'));

        // A task id in the data beyond --num-tasks: one line, exit 1.
        r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "bad.jsonl"), "--out", Path.Combine(root, "bad"), "--method", "mpt",
            "--num-tasks", "2", "--num-virtual-tokens", "3", "--steps", "1", "--seq-len", "24");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("task id 5 is out of range", r.Stderr);
    }

    [Fact]
    public void HyperformerTrainsAndItsExportedAdapterScoresTheSame()
    {
        var model = Model();
        string root = TinyCheckpoints.NewTempDirectory();
        string hyper = Path.Combine(root, "hyper"), export = Path.Combine(root, "task1");
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "tasks.jsonl"), "--out", hyper, "--method", "hyperformer",
            "--num-tasks", "2", "--hyper-reduction-factor", "4", "--task-embedding-dim", "4", "--projected-task-embedding-dim", "4", "--task-hidden-dim", "8",
            "--steps", "2", "--batch-size", "2", "--seq-len", "24", "--lr", "0.01");
        Assert.True(r.ExitCode == 0, r.Stderr);
        r = CliRunner.Run("hyperformer-export", "--model", model, "--adapter", hyper, "--task", "1", "--out", export);
        Assert.True(r.ExitCode == 0, r.Stderr);
        var viaHyper = CliRunner.Run("eval", "--model", model, "--adapter", hyper, "--task-id", "1", "--text", Path.Combine(model, "text.txt"), "--json");
        var viaExport = CliRunner.Run("eval", "--model", model, "--adapter", export, "--text", Path.Combine(model, "text.txt"), "--json");
        Assert.True(viaHyper.ExitCode == 0 && viaExport.ExitCode == 0, viaHyper.Stderr + viaExport.Stderr);
        Assert.Equal(Nll(viaHyper), Nll(viaExport), 6);
    }
}
