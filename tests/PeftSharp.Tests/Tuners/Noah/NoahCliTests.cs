using System.Text.Json;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tuners.UniPelt;

namespace PeftSharp.Tests.Tuners.Noah;

/// <summary>train --method noah writes a supernet; noah-search picks a sub-network under the budget and exports ordinary adapters.</summary>
public class NoahCliTests
{
    [Fact]
    public void TrainSupernetSearchAndEvalTheExport()
    {
        var model = UniPeltCliTests.Model();
        var supernet = Path.Combine(TinyCheckpoints.NewTempDirectory(), "noah");
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "data.txt"), "--out", supernet, "--method", "noah",
            "--noah-ranks", "0,2,4", "--noah-dims", "0,4", "--noah-lengths", "0,3", "--steps", "4", "--lr", "1e-2", "--batch-size", "2", "--seq-len", "24", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using (var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(supernet, "adapter_config.json"))))
            Assert.Equal("NOAH", cfg.RootElement.GetProperty("peft_type").GetString());

        // GPT-2, hidden 16, 2 layers: LoRA on c_attn costs 64 per rank per layer, the adapter 32 per width per layer,
        // the prompt 64 per position. Budget 400 allows e.g. r=2 (256) + p=0, or d=4 (256), not r=4 (512).
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "chosen");
        var s = CliRunner.Run("noah-search", "--model", model, "--adapter", supernet, "--data", Path.Combine(model, "text.txt"), "--budget", "400",
            "--population", "4", "--generations", "2", "--seed", "1", "--out", outDir, "--json");
        Assert.True(s.ExitCode == 0, s.Stderr);
        var j = s.Json();
        int rank = j.GetProperty("lora_rank").GetInt32(), dim = j.GetProperty("adapter_dim").GetInt32(), len = j.GetProperty("prompt_length").GetInt32();
        long parameters = 2L * rank * (16 + 48) + 2L * 2 * dim * 16 + len * 2L * 2 * 16;
        Assert.Equal(parameters, j.GetProperty("parameters").GetInt64());
        Assert.True(parameters <= 400);
        Assert.True(File.Exists(Path.Combine(outDir, "noah_search.json")));
        var folders = j.GetProperty("folders").EnumerateArray().Select(f => Path.Combine(outDir, f.GetString()!)).ToList();
        Assert.Equal((rank > 0 ? 1 : 0) + (dim > 0 ? 1 : 0) + (len > 0 ? 1 : 0), folders.Count);
        if (folders.Count > 0)
        {
            var args = new List<string> { "eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--json" };
            foreach (var f in folders) args.AddRange(["--adapter", f]);
            var e = CliRunner.Run([.. args]);
            Assert.True(e.ExitCode == 0, e.Stderr);
        }

        var bad = CliRunner.Run("noah-search", "--model", model, "--adapter", model, "--data", Path.Combine(model, "text.txt"), "--budget", "10", "--out", Path.Combine(outDir, "x"));
        Assert.Equal(1, bad.ExitCode);
        Assert.Single(bad.Stderr.Trim().Split('\n'));
    }
}
