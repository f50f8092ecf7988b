using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>Our TorchSharp GPT-2 against the plain-loop reference, on tiny random checkpoints written by the test.</summary>
public class Gpt2ForwardTests
{
    static readonly NaiveGpt2Config Config = new() { VocabSize = 61, NEmbd = 24, NLayer = 2, NHead = 3, NPositions = 40 };

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, true)] // hub-style keys without "transformer." and the old attn.bias / masked_bias buffers
    public void LogitsMatchReference(bool prefix, bool buffers)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options
        {
            Seed = 3, TransformerPrefix = prefix, IncludeAttnBiasBuffers = buffers, IncludeMaskedBias = buffers,
        });
        using var model = ModelLoader.Load(dir);
        var ids = RandomIds(17, Config.VocabSize, seed: 5);
        var expected = new NaiveGpt2(Config, ckpt.Weights).Logits(ids);
        Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void Bf16CheckpointLoadsExactlyAndRunsInBf16()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 4, DType = NaiveDType.BF16 });
        var ids = RandomIds(12, Config.VocabSize, seed: 6);
        var expected = new NaiveGpt2(Config, ckpt.Weights).Logits(ids);
        using (var fp32 = ModelLoader.Load(dir, ScalarType.Float32))
            Assert.True(MaxAbsDiff(expected, Logits(fp32, ids)) < 1e-4);
        using var bf16 = (Gpt2LMHeadModel)ModelLoader.Load(dir, ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, bf16.transformer.wte.weight.dtype);
        // bf16 arithmetic carries ~3 significant digits; logits here are O(1).
        Assert.True(MaxAbsDiff(expected, Logits(bf16, ids)) < 0.1);
    }

    [Fact]
    public void Conv1DWeightsAreStoredInputMajor()
    {
        // c_attn maps 24 → 72: a checkpoint laid out [out, in] (nn.Linear style) must be rejected, naming the tensor.
        var dir = TinyCheckpoints.NewTempDirectory();
        var weights = TinyCheckpoints.RandomGpt2Weights(Config, new TinyGpt2Options { Seed = 1 });
        TinyCheckpoints.WriteGpt2(dir, Config, weights, new TinyGpt2Options { Seed = 1 });
        using var model = (Gpt2LMHeadModel)ModelLoader.Load(dir);
        Assert.Equal(new long[] { 24, 72 }, model.transformer.h[0].attn.c_attn.weight.shape);
        Assert.Equal(new long[] { 24, 96 }, model.transformer.h[0].mlp.c_fc.weight.shape);
    }

    [Fact]
    public void KvCacheGivesTheSameLogitsAsOneFullForward()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 8 });
        using var model = ModelLoader.Load(dir);
        var ids = RandomIds(10, Config.VocabSize, seed: 9);
        var full = new NaiveGpt2(Config, ckpt.Weights).Logits(ids);
        using var cache = model.NewCache();
        using var _ = no_grad();
        // Prompt of 6 tokens, then 4 single steps.
        var prompt = model.Forward(tensor(ids[..6].Select(i => (long)i).ToArray()).unsqueeze(0), cache)[0];
        var rows = new List<Tensor> { prompt };
        for (int t = 6; t < 10; t++)
            rows.Add(model.Forward(tensor(new long[] { ids[t] }).unsqueeze(0), cache)[0]);
        var incremental = ToArray(cat(rows, 0));
        Assert.True(MaxAbsDiff(full, incremental) < 1e-4);
    }

    [Fact]
    public void ScoringMatchesReferenceNll()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 10 });
        using var model = ModelLoader.Load(dir);
        var naive = new NaiveGpt2(Config, ckpt.Weights);
        var ids = RandomIds(95, Config.VocabSize, seed: 11); // longer than n_positions (40): three windows
        var (count, expected) = NaiveScoring.WindowedMeanNll(ids, Config.NPositions, naive.Logits);
        var result = Scoring.MeanNll(model, ids);
        Assert.Equal(ids.Length - 1, result.Tokens);
        Assert.Equal(count, result.Tokens);
        Assert.Equal(expected, result.MeanNll, 1e-5);
        var (count7, expected7) = NaiveScoring.WindowedMeanNll(ids, 7, naive.Logits);
        var result7 = Scoring.MeanNll(model, ids, window: 7);
        Assert.Equal(count7, result7.Tokens);
        Assert.Equal(expected7, result7.MeanNll, 1e-5);
    }
}
