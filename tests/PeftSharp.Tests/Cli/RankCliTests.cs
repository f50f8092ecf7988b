using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Cli;

/// <summary>--rank, export-rank and sweep-ranks through the command line.</summary>
public class RankCliTests
{
    [Fact]
    public void SweepRanksScoresEveryRankWritesAPlotAndEvalAtRankAgrees()
    {
        var config = new NaiveLlamaConfig { ModelType = "llama", VocabSize = 1003, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 1,
                                            NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 64 };
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 101 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        var adapter = TinyCheckpoints.NewTempDirectory();
        using (var model = ModelLoader.Load(dir))
        {
            var lora = LoraModel.Create(model, new LoraConfig { R = 3, LoraAlpha = 6, InitLoraWeights = InitLoraWeights.False }, seed: 102);
            AdapterFiles.Save(lora, adapter);
        }
        // Mark it as DyLoRA-trained so ranks are truncated rather than SVD-approximated.
        var cfgPath = Path.Combine(adapter, "adapter_config.json");
        File.WriteAllText(cfgPath, File.ReadAllText(cfgPath).Replace("\"bias\": \"none\",", "\"bias\": \"none\",\n  \"dylora_r_min\": 1,"));
        var text = Path.Combine(dir, "held-out.txt");
        File.WriteAllText(text, "Hello world, the hello! wherefore art thou the world?");
        var plot = Path.Combine(dir, "sweep.png");

        var r = CliRunner.Run("sweep-ranks", "--model", dir, "--adapter", adapter, "--text", text, "--plot", plot, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        Assert.Equal("dylora", json.GetProperty("method").GetString());
        var ranks = json.GetProperty("ranks").EnumerateArray().ToList();
        Assert.Equal([1, 2, 3], ranks.Select(x => x.GetProperty("rank").GetInt32()));
        Assert.True(new FileInfo(plot).Length > 1000);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(plot)[..4]);

        var eval2 = CliRunner.Run("eval", "--model", dir, "--text", text, "--adapter", adapter, "--rank", "2", "--json");
        Assert.Equal(ranks[1].GetProperty("nll").GetDouble(), eval2.Json().GetProperty("nll").GetDouble(), 1e-6);

        var exported = Path.Combine(TinyCheckpoints.NewTempDirectory(), "r2");
        Assert.Equal(0, CliRunner.Run("export-rank", "--adapter", adapter, "--rank", "2", "--out", exported).ExitCode);
        Assert.DoesNotContain("dylora", File.ReadAllText(Path.Combine(exported, "adapter_config.json")));
        var evalExported = CliRunner.Run("eval", "--model", dir, "--text", text, "--adapter", exported, "--json");
        Assert.Equal(ranks[1].GetProperty("nll").GetDouble(), evalExported.Json().GetProperty("nll").GetDouble(), 1e-5);

        // A plain LoRA adapter is swept through truncated SVDs; at full rank that is the adapter itself.
        File.WriteAllText(cfgPath, File.ReadAllText(cfgPath).Replace("\n  \"dylora_r_min\": 1,", ""));
        var svd = CliRunner.Run("sweep-ranks", "--model", dir, "--adapter", adapter, "--text", text, "--plot", plot, "--json");
        Assert.True(svd.ExitCode == 0, svd.Stderr);
        Assert.Equal("svd", svd.Json().GetProperty("method").GetString());
        var full = CliRunner.Run("eval", "--model", dir, "--text", text, "--adapter", adapter, "--json").Json().GetProperty("nll").GetDouble();
        Assert.Equal(full, svd.Json().GetProperty("ranks")[2].GetProperty("nll").GetDouble(), 1e-4);
    }
}
