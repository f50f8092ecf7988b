using PeftSharp.Tests.Reference;

namespace PeftSharp.Tests.Cli;

/// <summary>The demo's whole pipeline at its tiny scale: base model, two adapters, report and plot.</summary>
public class DemoSmokeTests
{
    [Fact]
    public void TinyDemoWritesItsReportAdaptersAndSummary()
    {
        var root = TinyCheckpoints.NewTempDirectory("peftsharp-demo-");
        string outDir = Path.Combine(root, "out"), cache = Path.Combine(root, "cache");
        var r = CliRunner.Run("demo", "--scale", "tiny", "--out", outDir, "--cache", cache, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        Assert.False(json.GetProperty("base_model_cached").GetBoolean());
        Assert.True(json.GetProperty("merged_max_abs_diff").GetDouble() < 1e-4); // float32 merge is exact
        Assert.True(File.Exists(Path.Combine(outDir, "report.md")));
        Assert.True(new FileInfo(Path.Combine(outDir, "loss.png")).Length > 1000);
        foreach (var adapter in new[] { "whisper", "shout" })
        {
            Assert.True(File.Exists(Path.Combine(outDir, "adapters", adapter, "adapter_config.json")));
            Assert.True(File.Exists(Path.Combine(outDir, "adapters", adapter, "adapter_model.safetensors")));
        }
        // The base model is an ordinary Hugging Face folder, reused by the next run.
        string baseDir = json.GetProperty("base_model_dir").GetString()!;
        foreach (var file in new[] { "config.json", "model.safetensors", "tokenizer.json" }) Assert.True(File.Exists(Path.Combine(baseDir, file)), file);
        var again = CliRunner.Run("demo", "--scale", "tiny", "--out", outDir, "--cache", cache, "--json");
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.True(again.Json().GetProperty("base_model_cached").GetBoolean());
    }
}
