using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>Our TorchSharp Llama family against the plain-loop reference, on tiny random checkpoints written by the test.</summary>
public class LlamaForwardTests
{
    public static TheoryData<string> Variants() => ["llama-gqa", "llama-mha-tied", "llama-bias", "llama3-rope", "mistral", "qwen2", "head-dim"];

    static NaiveLlamaConfig ConfigFor(string variant) => variant switch
    {
        "llama-gqa" => new() { ModelType = "llama", NumAttentionHeads = 4, NumKeyValueHeads = 2 },
        "llama-mha-tied" => new() { ModelType = "llama", NumAttentionHeads = 4, NumKeyValueHeads = 4, TieWordEmbeddings = true },
        "llama-bias" => new() { ModelType = "llama", AttentionBias = true, MlpBias = true, NumKeyValueHeads = 1 },
        "llama3-rope" => new() { ModelType = "llama", RopeTheta = 500000, MaxPositionEmbeddings = 64,
            RopeScaling = new NaiveLlama3RopeScaling { Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 16 } },
        "mistral" => new() { ModelType = "mistral", NumKeyValueHeads = 2 },
        "qwen2" => new() { ModelType = "qwen2", NumKeyValueHeads = 2, TieWordEmbeddings = true },
        "head-dim" => new() { ModelType = "llama", HiddenSize = 16, NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = 12 },
        _ => throw new ArgumentException(variant),
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void LogitsMatchReference(string variant)
    {
        var config = ConfigFor(variant);
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 21 });
        using var model = ModelLoader.Load(dir);
        var ids = RandomIds(19, config.VocabSize, seed: 22);
        var expected = new NaiveLlama(config, ckpt.Weights).Logits(ids);
        Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4, variant);
    }

    [Fact]
    public void KvCacheGivesTheSameLogitsAsOneFullForward()
    {
        var config = ConfigFor("llama-gqa");
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 23 });
        using var model = ModelLoader.Load(dir);
        var ids = RandomIds(11, config.VocabSize, seed: 24);
        var full = new NaiveLlama(config, ckpt.Weights).Logits(ids);
        using var cache = model.NewCache();
        using var _ = no_grad();
        var rows = new List<Tensor> { model.Forward(tensor(ids[..5].Select(i => (long)i).ToArray()).unsqueeze(0), cache)[0] };
        // Then a 2-token chunk (needs the offset causal mask) and single steps.
        rows.Add(model.Forward(tensor(ids[5..7].Select(i => (long)i).ToArray()).unsqueeze(0), cache)[0]);
        for (int t = 7; t < 11; t++)
            rows.Add(model.Forward(tensor(new long[] { ids[t] }).unsqueeze(0), cache)[0]);
        Assert.True(MaxAbsDiff(full, ToArray(cat(rows, 0))) < 1e-4);
    }

    [Fact]
    public void RotaryInverseFrequenciesFollowTheFormula()
    {
        // inv_freq[i] = 1 / theta^(2i/d), computed here independently.
        var rope = new PeftSharp.Models.Layers.RotaryEmbedding(8, 10000, null);
        for (int i = 0; i < 4; i++)
            Assert.Equal(1.0 / Math.Pow(10000, 2.0 * i / 8), rope.InverseFrequencies[i], 12);
        // At position 0 the rotation is the identity.
        var (cos, sin) = rope.Tables(0, 1, ScalarType.Float32, CPU);
        var x = randn(1, 1, 1, 8);
        var y = PeftSharp.Models.Layers.RotaryEmbedding.Apply(x, cos, sin);
        Assert.True(x.allclose(y));
    }

    [Fact]
    public void ScoringMatchesReferenceNll()
    {
        var config = ConfigFor("qwen2") with { MaxPositionEmbeddings = 24 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 25 });
        using var model = ModelLoader.Load(dir);
        var naive = new NaiveLlama(config, ckpt.Weights);
        var ids = RandomIds(60, config.VocabSize, seed: 26);
        var (count, expected) = NaiveScoring.WindowedMeanNll(ids, 24, naive.Logits);
        var result = Scoring.MeanNll(model, ids);
        Assert.Equal(count, result.Tokens);
        Assert.Equal(expected, result.MeanNll, 1e-5);
    }
}
