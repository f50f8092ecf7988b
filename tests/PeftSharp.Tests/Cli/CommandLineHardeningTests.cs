using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary>Flags out of range, malformed JSON, usage, --version, shell completion and SIGTERM, as a user meets them.</summary>
public class CommandLineHardeningTests
{
    [Theory]
    [InlineData("--lr", "-1", "--lr: expected a number > 0, got -1")]
    [InlineData("--lr", "0", "--lr: expected a number > 0, got 0")]
    [InlineData("--steps", "0", "--steps: expected an integer ≥ 1, got 0")]
    [InlineData("--epochs", "0", "--epochs: expected an integer ≥ 1, got 0")]
    [InlineData("--batch-size", "0", "--batch-size: expected an integer ≥ 1, got 0")]
    [InlineData("--r", "0", "--r: expected an integer ≥ 1, got 0")]
    [InlineData("--dropout", "1", "--dropout: expected a number in [0, 1), got 1")]
    [InlineData("--dropout", "-0.1", "--dropout: expected a number in [0, 1), got -0.1")]
    [InlineData("--val-split", "1", "--val-split: expected a number in [0, 1), got 1")]
    public void Train_flags_out_of_range_stop_before_any_work(string flag, string value, string message)
    {
        // The model folder does not exist: the range error must come first, before anything is read.
        var r = CliRunner.Run("train", "--model", "/nonexistent/model", "--data", "/nonexistent/data.txt", "--out", "/nonexistent/out", flag, value);
        Assert.Equal($"error: {message} (see: peftsharp train --help)", CliRunner.AssertUserError(r));
    }

    [Theory]
    [InlineData("--temperature", "-0.5", "--temperature: expected a number ≥ 0, got -0.5")]
    [InlineData("--top-p", "0", "--top-p: expected a number in (0, 1], got 0")]
    [InlineData("--top-p", "1.5", "--top-p: expected a number in (0, 1], got 1.5")]
    [InlineData("--max-new-tokens", "-1", "--max-new-tokens: expected an integer ≥ 0, got -1")]
    public void Generate_flags_out_of_range_are_one_line(string flag, string value, string message)
    {
        var r = CliRunner.Run("generate", "--model", "/nonexistent/model", "--prompt", "hi", flag, value);
        Assert.Equal($"error: {message} (see: peftsharp generate --help)", CliRunner.AssertUserError(r));
    }

    [Fact]
    public void Config_file_values_are_checked_like_flags_and_malformed_config_names_line_and_column()
    {
        using var dir = new TempDir();
        dir.Write("bad-range.json", """{"lr": -0.001}""");
        var r = CliRunner.Run("train", "--model", "/nonexistent/model", "--data", "d", "--out", "o", "--config", dir.File("bad-range.json"));
        Assert.Equal($"error: --config {dir.File("bad-range.json")}: \"lr\" (--lr: expected a number > 0, got -0.001)", CliRunner.AssertUserError(r));

        dir.Write("broken.json", "{\n  \"lr\": 1e-4,\n  \"r\": 8,,\n}");
        r = CliRunner.Run("train", "--model", "/nonexistent/model", "--data", "d", "--out", "o", "--config", dir.File("broken.json"));
        Assert.Equal($"error: --config {dir.File("broken.json")}: invalid JSON at line 3, column 10: expected a property name in double quotes",
                     CliRunner.AssertUserError(r));
    }

    [Fact]
    public void Malformed_tokenizer_json_names_file_line_and_column()
    {
        using var dir = new TempDir();
        dir.Write("tokenizer.json", "{\n\"model\": {\"type\": \"BPE\" \"vocab\": {}}\n}");
        var line = CliRunner.AssertUserError(CliRunner.Run("tokenize", "--model", dir.Path, "--text", "hi"));
        Assert.Equal($"error: {dir.File("tokenizer.json")}: invalid JSON at line 2, column 25: expected a comma or a closing bracket after the value", line);
    }

    [Fact]
    public void Version_comes_from_directory_build_props_and_usage_says_peftsharp()
    {
        var props = File.ReadAllText(Path.Combine(RealTokenizerTests.Folder, "..", "..", "..", "..", "Directory.Build.props"));
        string version = Regex.Match(props, "<Version>([^<]+)</Version>").Groups[1].Value;
        Assert.NotEmpty(version);
        var r = CliRunner.Run("--version");
        Assert.Equal(0, r.ExitCode);
        Assert.StartsWith(version, r.Stdout.Trim());

        var help = CliRunner.Run("train", "--help");
        Assert.Contains("peftsharp train [options]", help.Stdout);
        Assert.DoesNotContain("PeftSharp.Cli", help.Stdout);
    }

    [Fact]
    public void Completion_scripts_ask_the_tool_and_the_tool_suggests_commands_and_flags()
    {
        var bash = CliRunner.Run("completion", "bash");
        Assert.Equal(0, bash.ExitCode);
        Assert.Contains("complete -o default -F _peftsharp_complete peftsharp", bash.Stdout);
        Assert.Contains("[suggest:", bash.Stdout);
        Assert.Contains("compdef _peftsharp_complete peftsharp", CliRunner.Run("completion", "zsh").Stdout);
        // What the scripts run: System.CommandLine's suggest directive on the text after "peftsharp".
        Assert.Contains("tokenize", CliRunner.Run("[suggest:3]", "tok").Stdout.Split('\n'));
        var flags = CliRunner.Run("[suggest:10]", "train --lo").Stdout.Split('\n');
        Assert.Contains("--lora-plus-ratio", flags);
        Assert.DoesNotContain("--prompt", flags);
    }

    [Fact]
    public async Task Sigterm_during_training_saves_a_checkpoint_and_exits_143()
    {
        var config = new NaiveGpt2Config { VocabSize = 1003, NEmbd = 16, NLayer = 1, NHead = 2, NPositions = 32 };
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, config, new TinyGpt2Options { Seed = 5 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat("hello world, the elle held the world.\n", 40)));
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "adapter");

        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // Without GLIBC_TUNABLES the tool restarts itself with it (HugePages.cs): the signal goes to the parent, as
        // `docker stop` sends it to PID 1, and must reach the training child.
        info.Environment.Remove("GLIBC_TUNABLES");
        info.Environment.Remove("PEFTSHARP_NO_HUGEPAGES");
        foreach (var a in new[] { CliRunner.DllPath, "train", "--model", dir, "--data", Path.Combine(dir, "data.txt"), "--out", outDir,
                                  "--steps", "1000000", "--batch-size", "1", "--seq-len", "16", "--json" })
            info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            // Wait until a few optimizer steps are logged, then stop it the way a container runtime does.
            var metrics = Path.Combine(outDir, "metrics.jsonl");
            var clock = Stopwatch.StartNew();
            while (!(File.Exists(metrics) && File.ReadLines(metrics).Count() >= 3))
            {
                if (process.HasExited) Assert.Fail($"train exited early ({process.ExitCode}): {await stderr}");
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(2), "train did not start logging steps");
                await Task.Delay(100);
            }
            using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString()])) await kill.WaitForExitAsync();
            Assert.True(process.WaitForExit(TimeSpan.FromMinutes(2)), "train did not stop after SIGTERM");
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
        string errors = await stderr;
        Assert.True(process.ExitCode == 143, $"exit code {process.ExitCode}: {errors}");
        Assert.Contains("SIGTERM", errors);
        var checkpoint = Assert.Single(Directory.GetDirectories(outDir, "checkpoint-*"));
        Assert.True(File.Exists(Path.Combine(checkpoint, "adapter_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(outDir, "adapter_model.safetensors")));
        long step = long.Parse(Path.GetFileName(checkpoint)["checkpoint-".Length..]);
        Assert.InRange(step, 3, 999_999);
    }
}
