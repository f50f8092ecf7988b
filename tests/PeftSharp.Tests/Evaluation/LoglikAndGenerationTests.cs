using System.Text.Json;
using PeftSharp.Evaluation;
using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Evaluation;

/// <summary>
/// Loglik scores and batched greedy generation against the plain-loop reference models: log-softmax sums and argmax
/// loops computed from <see cref="NaiveGpt2"/> / <see cref="NaiveLlama"/> logits of each whole sequence on its own.
/// </summary>
public class LoglikAndGenerationTests
{
    const int Vocab = 1003;

    static string Gpt2Folder(out NaiveGpt2 naive, int positions = 64)
    {
        var config = new NaiveGpt2Config { VocabSize = Vocab, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = positions };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, config, new TinyGpt2Options { Seed = 41, InitStd = 0.3, BosTokenId = TinyBpe.EndOfText, EosTokenId = TinyBpe.EndOfText });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        naive = new NaiveGpt2(config, ckpt.Weights);
        return dir;
    }

    static double ReferenceLoglik(Func<int[], float[,]> logitsOf, IReadOnlyList<int> context, IReadOnlyList<int> continuation)
    {
        int[] whole = [.. context, .. continuation];
        var logits = logitsOf(whole);
        double total = 0;
        for (int i = 0; i < continuation.Count; i++)
            total -= NaiveScoring.TokenNll(logits, context.Count - 1 + i, continuation[i]);
        return total;
    }

    [Fact]
    public void LoglikScoresMatchTheReferenceGpt2()
    {
        var dir = Gpt2Folder(out var naive);
        using var model = ModelLoader.Load(dir);
        var scorer = new LoglikScorer(model, ModelTokenizer.Load(dir));
        const string context = "O Romeo, Romeo! wherefore art thou";
        string[] choices = [" Romeo?", " hello world, the hello!", " a", " Capulet"]; // different lengths, one of one token
        var shared = scorer.Score(context, choices);
        var naiveWay = scorer.ScoreNaive(context, choices);
        var ctx = TinyBpe.ReferenceEncode(context);
        for (int i = 0; i < choices.Length; i++)
        {
            double expected = ReferenceLoglik(naive.Logits, ctx, TinyBpe.ReferenceEncode(choices[i]));
            Assert.Equal(expected, shared[i], 1e-3);
            Assert.Equal(expected, naiveWay[i], 1e-3);
        }
    }

    [Fact]
    public void LoglikScoresMatchTheReferenceLlamaWithBos()
    {
        var config = new NaiveLlamaConfig { ModelType = "llama", VocabSize = Vocab, HiddenSize = 16, IntermediateSize = 40, NumHiddenLayers = 2,
                                            NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 64 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 42, InitStd = 0.3, BosTokenId = TinyBpe.BeginOfText, EosTokenId = TinyBpe.EndOfText });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson(postProcessor: TinyBpe.BosTemplate())));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
            """{"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|endoftext|>"}""");
        using var model = ModelLoader.Load(dir);
        var scorer = new LoglikScorer(model, ModelTokenizer.Load(dir));
        string[] choices = [" yes", " no, thou art", " Hello world"];
        var scores = scorer.Score("Deny thy father?", choices);
        int[] ctx = [TinyBpe.BeginOfText, .. TinyBpe.ReferenceEncode("Deny thy father?")]; // BOS on the context only
        var naive = new NaiveLlama(config, ckpt.Weights);
        for (int i = 0; i < choices.Length; i++)
            Assert.Equal(ReferenceLoglik(naive.Logits, ctx, TinyBpe.ReferenceEncode(choices[i])), scores[i], 1e-3);
    }

    [Fact]
    public void AccAndAccNormByHand()
    {
        // Two items with fixed log-likelihoods: acc takes the larger sum, acc_norm the larger sum per character.
        var task = EvalTasks.Get("multiple_choice");
        EvalItem Item(string[] choices, int gold) =>
            new("p", choices[gold], "ctx", choices, gold, ["answer1", "answer2"], []);
        var items = new[] { Item(["a", "bbbbbbbbbb"], 1), Item(["cc", "dddd"], 0) };
        var lls = new Dictionary<string, double[]> { ["a"] = [-3.0, -4.0], ["cc"] = [-2.0, -6.0] };
        var results = Evaluator.RunLoglik(task, items, (ctx, conts) => lls[conts[0].Trim()]);
        // Item 1: acc picks "a" (−3 > −4): wrong; norm: −3/1 = −3 vs −4/10 = −0.4 → "bbbbbbbbbb": right.
        // Item 2: acc picks "cc": right; norm: −2/2 = −1 vs −6/4 = −1.5 → "cc": right.
        var summary = Evaluator.Summarize("multiple_choice", "loglik", results);
        Assert.Equal(1, summary.Correct);
        Assert.Equal(0.5, summary.Accuracy);
        Assert.Equal(1.0, summary.AccNorm);
        Assert.Equal(" a", " " + results[0].Prediction);
    }

    [Fact]
    public void BatchedLeftPaddedGreedyGenerationEqualsOnePromptAtATime()
    {
        var dir = Gpt2Folder(out var naive);
        using var model = ModelLoader.Load(dir);
        var generator = new BatchGenerator(model, ModelTokenizer.Load(dir));
        string[] prompts = ["Hello", "O Romeo, Romeo! wherefore art thou Romeo?", "Deny thy father and", "the"];
        var batched = generator.GenerateIds(prompts.Select(p => TinyBpe.ReferenceEncode(p).Select(i => (long)i).ToArray()).ToList(), 8);
        for (int p = 0; p < prompts.Length; p++)
        {
            // The reference: argmax over the plain model's logits of the whole sequence, one prompt alone, no padding.
            var ids = TinyBpe.ReferenceEncode(prompts[p]);
            var expected = new List<int>();
            for (int step = 0; step < 8; step++)
            {
                var logits = naive.Logits(ids.ToArray());
                int last = logits.GetLength(0) - 1, best = 0;
                for (int v = 1; v < Vocab; v++) if (logits[last, v] > logits[last, best]) best = v;
                if (best == TinyBpe.EndOfText) break;
                expected.Add(best);
                ids.Add(best);
            }
            Assert.Equal(expected, batched[p]);
        }
    }
}
