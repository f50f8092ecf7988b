using PeftSharp.Tests.Tokenization;
using PeftSharp.Training;
using static PeftSharp.Tests.Training.TrainingTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>Text packing, instruction formats, label masking, bad lines, padding and the data loader.</summary>
public class DataTests
{
    const int X = (int)CausalLMLoss.IgnoreIndex;
    const int Eos = TinyBpe.EndOfText;

    [Fact]
    public void TextIsPackedWithEosBetweenDocumentsAndLabelsEqualInputs()
    {
        using var dir = new TempDir();
        var tokenizer = Tokenizer(dir);
        var first = TinyBpe.ReferenceEncode("hello world");
        var second = TinyBpe.ReferenceEncode("the world, hello");
        var stream = first.Append(Eos).Concat(second).ToList();
        var data = TextData.Pack(tokenizer, ["hello world", "the world, hello"], blockSize: 4);
        // A final block of one token predicts nothing and is dropped; a longer remainder is kept.
        int kept = stream.Count % 4 == 1 ? stream.Count - 1 : stream.Count;
        Assert.Equal(stream.Take(kept), data.Examples.SelectMany(e => e.InputIds));
        Assert.Equal((kept + 3) / 4, data.Examples.Count);
        Assert.All(data.Examples.SkipLast(1), e => Assert.Equal(4, e.Length));
        Assert.All(data.Examples, e => Assert.Equal(e.InputIds, e.Labels));
        Assert.Empty(data.Warnings);
    }

    [Fact]
    public void AlpacaPromptCarriesNoLabelsAndTheResponseEndsWithEos()
    {
        using var dir = new TempDir();
        var tokenizer = Tokenizer(dir);
        dir.Write("train.jsonl",
            "{\"instruction\": \"Say hello\", \"output\": \"hello world\"}\n\n" +
            "{\"instruction\": \"Name it\", \"input\": \"the world\", \"output\": \"world\"}\n");
        var data = DataFiles.Load(dir.File("train.jsonl"), tokenizer, 512);
        Assert.Equal(2, data.Examples.Count);

        var prompt = TinyBpe.ReferenceEncode(PromptFormats.AlpacaNoInput.Replace("{instruction}", "Say hello"));
        var response = TinyBpe.ReferenceEncode("hello world");
        var e = data.Examples[0];
        Assert.Equal(prompt.Concat(response).Append(Eos), e.InputIds);
        Assert.Equal(Enumerable.Repeat(X, prompt.Count).Concat(response).Append(Eos), e.Labels);

        var withInput = TinyBpe.ReferenceEncode(PromptFormats.AlpacaWithInput.Replace("{instruction}", "Name it").Replace("{input}", "the world"));
        Assert.Equal(withInput.Count, data.Examples[1].Labels.TakeWhile(l => l == X).Count());
        Assert.Equal(TinyBpe.ReferenceEncode("world").Append(Eos), data.Examples[1].Labels.SkipWhile(l => l == X));
    }

    [Fact]
    public void TheTokenizersBosStartsTheExampleWithoutLabel()
    {
        using var dir = new TempDir();
        dir.WriteJson("tokenizer.json", TinyBpe.TokenizerJson(postProcessor: TinyBpe.BosTemplate()));
        dir.WriteJson("tokenizer_config.json", new { eos_token = "<|endoftext|>" });
        var tokenizer = PeftSharp.Tokenization.ModelTokenizer.Load(dir.Path);
        var e = InstructionData.Tokenize(PromptFormats.PromptCompletion("the", " world"), tokenizer, 64)!;
        Assert.Equal(new[] { TinyBpe.BeginOfText }.Concat(TinyBpe.ReferenceEncode("the")).Concat(TinyBpe.ReferenceEncode(" world")).Append(Eos), e.InputIds);
        Assert.Equal([X, X], e.Labels.Take(2));
    }

    /// <summary>The loss of an Alpaca example is the mean over its response tokens only, masked here by hand from the prompt's length.</summary>
    [Fact]
    public void PromptTokensCarryNoLoss()
    {
        using var dir = new TempDir();
        var tokenizer = Tokenizer(dir);
        using var model = LoadLlama(seed: 4, config: Llama with { VocabSize = TinyBpe.EndOfText + 1 });
        var example = InstructionData.Tokenize(PromptFormats.Alpaca("Say hello", null, "hello world"), tokenizer, 512)!;
        int promptLength = TinyBpe.ReferenceEncode(PromptFormats.AlpacaNoInput.Replace("{instruction}", "Say hello")).Count;

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var batch = Batch.Collate([example], 0);
        var hidden = model.Hidden(batch.InputIds);
        double loss = CausalLMLoss.Mean(model, hidden, batch.Labels).item<float>();

        // Per-position cross-entropy of the next token, from log_softmax over all positions.
        var logProbs = model.Logits(hidden)[0].to_type(ScalarType.Float64).log_softmax(-1);
        var ids = example.InputIds;
        var nll = Enumerable.Range(0, ids.Length - 1).Select(t => -logProbs[t, ids[t + 1]].item<double>()).ToArray();
        double masked = nll.Skip(promptLength - 1).Average(); // position t predicts token t+1: the first response token is predicted from the prompt's last
        Assert.Equal(masked, loss, 1e-5);
        Assert.Equal(ids.Length - promptLength, nll.Length - (promptLength - 1));
        Assert.True(Math.Abs(nll.Average() - loss) > 1e-3, "the unmasked loss should differ");
    }

    [Fact]
    public void PromptCompletionIsConcatenatedAsIs()
    {
        using var dir = new TempDir();
        var tokenizer = Tokenizer(dir);
        dir.Write("pc.jsonl", "{\"prompt\": \"the \", \"completion\": \"world\"}\n");
        var e = Assert.Single(InstructionData.LoadJsonl(dir.File("pc.jsonl"), tokenizer, 64).Examples);
        var prompt = TinyBpe.ReferenceEncode("the ");
        Assert.Equal(prompt.Concat(TinyBpe.ReferenceEncode("world")).Append(Eos), e.InputIds);
        Assert.Equal(prompt.Count, e.Labels.TakeWhile(l => l == X).Count());
    }

    [Fact]
    public void MessagesTrainOnEveryAssistantReplyOnly()
    {
        using var dir = new TempDir();
        var tokenizer = Tokenizer(dir);
        dir.Write("chat.jsonl",
            "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"hi\"}, " +
            "{\"role\": \"assistant\", \"content\": \"hello\"}, {\"role\": \"user\", \"content\": \"again\"}, {\"role\": \"assistant\", \"content\": \"world\"}]}\n");
        var data = InstructionData.LoadJsonl(dir.File("chat.jsonl"), tokenizer, 256);
        var e = Assert.Single(data.Examples);
        var p1 = TinyBpe.ReferenceEncode("<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n");
        var r1 = TinyBpe.ReferenceEncode("hello");
        var p2 = TinyBpe.ReferenceEncode("<|user|>\nagain\n<|assistant|>\n");
        var r2 = TinyBpe.ReferenceEncode("world");
        Assert.Equal(p1.Concat(r1).Append(Eos).Concat(p2).Concat(r2).Append(Eos), e.InputIds);
        Assert.Equal(p1.Select(_ => X).Concat(r1).Append(Eos).Concat(p2.Select(_ => X)).Concat(r2).Append(Eos), e.Labels);
    }

    [Fact]
    public void TooLongExamplesAreCutAndThoseWithoutResponseDropped()
    {
        using var dir = new TempDir();
        var tokenizer = Tokenizer(dir);
        var prompt = TinyBpe.ReferenceEncode("hello hello hello");
        dir.Write("long.jsonl",
            "{\"prompt\": \"hello hello hello\", \"completion\": \" world world world\"}\n" +
            "{\"prompt\": \"hello hello hello hello hello hello hello hello\", \"completion\": \" world\"}\n");
        var data = InstructionData.LoadJsonl(dir.File("long.jsonl"), tokenizer, prompt.Count + 2);
        var e = Assert.Single(data.Examples);
        Assert.Equal(prompt.Count + 2, e.Length);
        Assert.Equal(2, e.LabelledTokens);
        Assert.Equal(2, data.Warnings.Count);
    }

    [Theory]
    [InlineData("{\"instruction\": \"a\"}", 2, "\"output\"")]
    [InlineData("{\"instruction\": \"a\", \"output\": 3}", 2, "\"output\" to be a string")]
    [InlineData("{\"instruction\": \"a\", \"output\": \"b\"", 2, "invalid JSON")]
    [InlineData("[1, 2]", 2, "expected a JSON object")]
    [InlineData("{\"question\": \"a\", \"answer\": \"b\"}", 2, "\"question\"")]
    [InlineData("{\"prompt\": \"a\", \"completion\": \"b\"}", 2, "like line 1")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}", 2, "role \"assistant\"")]
    [InlineData("{\"messages\": [{\"role\": \"user\"}]}", 2, "messages[0].content")]
    public void BadLinesNameTheFileAndLine(string badLine, int line, string expected)
    {
        using var dir = new TempDir();
        var tokenizer = Tokenizer(dir);
        string first = badLine.Contains("messages") ? "{\"messages\": [{\"role\": \"assistant\", \"content\": \"ok\"}]}" : "{\"instruction\": \"x\", \"output\": \"y\"}";
        dir.Write("bad.jsonl", first + "\n" + badLine + "\n");
        var e = Assert.Throws<PeftSharpException>(() => InstructionData.LoadJsonl(dir.File("bad.jsonl"), tokenizer, 64));
        Assert.StartsWith($"{dir.File("bad.jsonl")}:{line}: ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void TextRecordsInJsonlArePacked()
    {
        using var dir = new TempDir();
        var tokenizer = Tokenizer(dir);
        dir.Write("docs.jsonl", "{\"text\": \"hello world\"}\n{\"text\": \"the world\"}\n");
        var data = DataFiles.Load(dir.File("docs.jsonl"), tokenizer, 100);
        var e = Assert.Single(data.Examples);
        Assert.Equal(TinyBpe.ReferenceEncode("hello world").Append(Eos).Concat(TinyBpe.ReferenceEncode("the world")), e.InputIds);
    }

    [Fact]
    public void CollatePadsOnTheRightWithMaskAndIgnoredLabels()
    {
        using var scope = NewDisposeScope();
        var batch = Batch.Collate([new TrainingExample([5, 6, 7], [X, 6, 7]), new TrainingExample([8], [8])], padTokenId: 0);
        Assert.Equal(new long[] { 5, 6, 7, 8, 0, 0 }, batch.InputIds.data<long>().ToArray());
        Assert.Equal(new long[] { X, 6, 7, 8, X, X }, batch.Labels.data<long>().ToArray());
        Assert.Equal(new long[] { 1, 1, 1, 1, 0, 0 }, batch.AttentionMask.data<long>().ToArray());
        Assert.True(batch.HasPadding);
        Assert.NotNull(batch.ModelMask);
        Assert.Equal(4, batch.Tokens);
        Assert.Equal(2, batch.LabelledTokens); // 6 and 7; the first token of a sequence is never predicted
        Assert.Null(Batch.Collate([new TrainingExample([1, 2], [1, 2])], 0).ModelMask);
    }

    [Fact]
    public void PaddedBatchGivesTheSameLossAsEachExampleAlone()
    {
        using var model = LoadLlama();
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var a = new TrainingExample([1, 2, 3, 4, 5, 6], [X, X, 3, 4, 5, 6]);
        var b = new TrainingExample([7, 8, 9], [7, 8, 9]);
        double Loss(params TrainingExample[] examples)
        {
            var batch = Batch.Collate(examples, 0);
            var (sum, _) = CausalLMLoss.Sum(model, model.Hidden(batch.InputIds, null, batch.ModelMask), batch.Labels);
            return sum.item<float>();
        }
        Assert.Equal(Loss(a) + Loss(b), Loss(a, b), 1e-4);
    }

    [Fact]
    public void LoaderShufflesEveryEpochAndResumesFromItsPosition()
    {
        var loader = new DataLoader(count: 10, batchSize: 3, seed: 7);
        Assert.Equal(4, loader.BatchesPerEpoch);
        var epoch0 = Enumerable.Range(0, 4).SelectMany(_ => loader.Next()).ToList();
        var epoch1 = Enumerable.Range(0, 4).SelectMany(_ => loader.Next()).ToList();
        Assert.Equal(Enumerable.Range(0, 10), epoch0.Order());
        Assert.Equal(Enumerable.Range(0, 10), epoch1.Order());
        Assert.NotEqual(epoch0, epoch1);
        Assert.NotEqual(Enumerable.Range(0, 10), epoch0);
        Assert.Equal(new DataPosition(2, 0), loader.Position);

        var again = new DataLoader(10, 3, 7);
        Assert.Equal(epoch0, Enumerable.Range(0, 4).SelectMany(_ => again.Next()));
        var resumed = new DataLoader(10, 3, 7) { Position = new DataPosition(1, 2) };
        Assert.Equal(epoch1.Skip(6), resumed.Next().Concat(resumed.Next()));
        Assert.Equal(Enumerable.Range(0, 10), new DataLoader(10, 3, 7, shuffle: false).Next().Concat(Enumerable.Range(3, 7)).Take(10).Order());
        Assert.NotEqual(epoch0, Enumerable.Range(0, 4).SelectMany(_ => new DataLoader(10, 10, 8).Next()));
    }

    [Fact]
    public void SplitHoldsOutASeededFraction()
    {
        var examples = RandomExamples(20, 3, 10, seed: 1);
        var (train, validation) = DataFiles.Split(examples, 0.1, seed: 3);
        Assert.Equal(18, train.Count);
        Assert.Equal(2, validation.Count);
        Assert.Equal(examples.OrderBy(e => e.GetHashCode()), train.Concat(validation).OrderBy(e => e.GetHashCode()));
        Assert.Equal(validation, DataFiles.Split(examples, 0.1, seed: 3).Validation);
        Assert.Throws<PeftSharpException>(() => DataFiles.Split(examples.Take(1).ToList(), 0.5, 1));
        Assert.Throws<PeftSharpException>(() => DataFiles.Split(examples, 1.0, 1));
    }
}
