using System.Text;
using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// <c>peftsharp eval</c> and <c>generate</c> end to end on tiny model folders with a tokenizer.json. Expected values
/// come from independent code: the test's naive BPE, the plain-loop reference models and the reference scoring.
/// </summary>
public class EvalAndGenerateTests
{
    const string Text = "O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;\n" +
                        "Or, if thou wilt not, be but sworn my love,\nAnd I'll no longer be a Capulet. Hello world, the hello!\n";
    const int Vocab = 1003; // 256 byte symbols + merges + the added tokens at 1000..1002

    static string WriteText(string dir)
    {
        var path = Path.Combine(dir, "text.txt");
        File.WriteAllText(path, Text);
        return path;
    }

    static void WriteTokenizer(string dir, bool bos)
    {
        var json = TinyBpe.TokenizerJson(postProcessor: bos ? TinyBpe.BosTemplate() : null);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(json));
    }

    [Fact]
    public void EvalOnGpt2FolderMatchesIndependentNll()
    {
        var config = new NaiveGpt2Config { VocabSize = Vocab, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, config, new TinyGpt2Options { Seed = 31, BosTokenId = TinyBpe.EndOfText, EosTokenId = TinyBpe.EndOfText });
        WriteTokenizer(dir, bos: false);
        var ids = TinyBpe.ReferenceEncode(Text).ToArray();
        Assert.True(ids.Length > 64); // several windows of 32
        var (count, nll) = NaiveScoring.WindowedMeanNll(ids, config.NPositions, new NaiveGpt2(config, ckpt.Weights).Logits);

        var r = CliRunner.Run("eval", "--model", dir, "--text", WriteText(dir), "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        Assert.Equal(count, json.GetProperty("tokens").GetInt32());
        Assert.Equal(nll, json.GetProperty("nll").GetDouble(), 1e-4);
        Assert.Equal(Math.Exp(nll), json.GetProperty("perplexity").GetDouble(), 1e-3);
    }

    [Fact]
    public void EvalOnLlamaFolderWithBosMatchesIndependentNll()
    {
        var config = new NaiveLlamaConfig { ModelType = "llama", VocabSize = Vocab, HiddenSize = 16, IntermediateSize = 40, NumHiddenLayers = 2,
                                            NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 48 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 32, BosTokenId = TinyBpe.BeginOfText, EosTokenId = TinyBpe.EndOfText });
        WriteTokenizer(dir, bos: true);
        // As Llama 3 folders: a fast tokenizer whose post-processor prepends <|begin_of_text|>.
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
            """{"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|endoftext|>"}""");
        int[] ids = [TinyBpe.BeginOfText, .. TinyBpe.ReferenceEncode(Text)];
        var (count, nll) = NaiveScoring.WindowedMeanNll(ids, config.MaxPositionEmbeddings, new NaiveLlama(config, ckpt.Weights).Logits);

        var r = CliRunner.Run("eval", "--model", dir, "--text", WriteText(dir), "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(count, r.Json().GetProperty("tokens").GetInt32());
        Assert.Equal(nll, r.Json().GetProperty("nll").GetDouble(), 1e-4);
    }

    [Fact]
    public void GreedyGenerationFollowsTheReferenceArgmaxAndStreamsTheSameText()
    {
        var config = new NaiveLlamaConfig { ModelType = "qwen2", VocabSize = Vocab, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2,
                                            NumAttentionHeads = 2, NumKeyValueHeads = 1, MaxPositionEmbeddings = 64, TieWordEmbeddings = true };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 33, InitStd = 0.3, BosTokenId = TinyBpe.EndOfText, EosTokenId = TinyBpe.EndOfText });
        WriteTokenizer(dir, bos: false);
        const string prompt = "Hello world";
        var naive = new NaiveLlama(config, ckpt.Weights);
        var ids = TinyBpe.ReferenceEncode(prompt);
        var generated = new List<int>();
        for (int step = 0; step < 12; step++)
        {
            var logits = naive.Logits(ids.ToArray());
            int last = logits.GetLength(0) - 1, best = 0;
            for (int v = 1; v < Vocab; v++) if (logits[last, v] > logits[last, best]) best = v;
            if (best == TinyBpe.EndOfText) break;
            generated.Add(best);
            ids.Add(best);
        }
        string expected = Decode(generated);

        var r = CliRunner.Run("generate", "--model", dir, "--prompt", prompt, "--max-new-tokens", "12", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(expected, r.Json().GetProperty("completion").GetString());
        Assert.Equal(generated.Count, r.Json().GetProperty("tokens").GetInt32());

        var streamed = CliRunner.Run("generate", "--model", dir, "--prompt", prompt, "--max-new-tokens", "12");
        Assert.Equal(prompt + expected + "\n", streamed.Stdout);
    }

    [Fact]
    public void ChatGenerationFormatsThePromptWithTheChatTemplateAndStopsAtItsEndOfTurn()
    {
        const int imStart = 1003, imEnd = 1004;
        var config = new NaiveLlamaConfig { ModelType = "qwen2", VocabSize = 1005, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2,
                                            NumAttentionHeads = 2, NumKeyValueHeads = 1, MaxPositionEmbeddings = 128, TieWordEmbeddings = true };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 35, InitStd = 0.3, EosTokenId = imEnd });
        WriteTokenizer(dir, bos: false);
        string template = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Tokenization", "ChatTemplates", "qwen2.jinja"));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["tokenizer_class"] = "GPT2Tokenizer",
            ["eos_token"] = "<|im_end|>",
            ["chat_template"] = template,
            ["added_tokens_decoder"] = new Dictionary<string, object>
            {
                ["1003"] = new { content = "<|im_start|>", special = true },
                ["1004"] = new { content = "<|im_end|>", special = true },
            },
        }));

        // ChatML as Qwen2's template writes it, by hand; ids by the reference BPE with the special tokens spliced in.
        const string rendered = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n";
        var ids = new List<int> { imStart };
        ids.AddRange(TinyBpe.ReferenceEncode("system\nBe brief."));
        ids.Add(imEnd);
        ids.AddRange(TinyBpe.ReferenceEncode("\n"));
        ids.Add(imStart);
        ids.AddRange(TinyBpe.ReferenceEncode("user\nHello world"));
        ids.Add(imEnd);
        ids.AddRange(TinyBpe.ReferenceEncode("\n"));
        ids.Add(imStart);
        ids.AddRange(TinyBpe.ReferenceEncode("assistant\n"));
        var naive = new NaiveLlama(config, ckpt.Weights);
        var generated = new List<int>();
        for (int step = 0; step < 10; step++)
        {
            var logits = naive.Logits(ids.ToArray());
            int last = logits.GetLength(0) - 1, best = 0;
            for (int v = 1; v < config.VocabSize; v++) if (logits[last, v] > logits[last, best]) best = v;
            if (best == imEnd) break;
            generated.Add(best);
            ids.Add(best);
        }
        Assert.NotEmpty(generated); // the seed gives a model that says something before its end of turn

        var r = CliRunner.Run("generate", "--model", dir, "--chat", "--system", "Be brief.", "--prompt", "Hello world", "--max-new-tokens", "10", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(rendered, r.Json().GetProperty("prompt_text").GetString());
        Assert.Equal(generated.Count, r.Json().GetProperty("tokens").GetInt32());
        Assert.Equal(Decode(generated), r.Json().GetProperty("completion").GetString());

        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"eos_token": "<|endoftext|>"}""");
        var line = CliRunner.AssertUserError(CliRunner.Run("generate", "--model", dir, "--chat", "--prompt", "hi"));
        Assert.Contains("--chat", line);
        Assert.Contains("no chat template", line);
    }

    [Fact]
    public void SamplingIsReproducibleFromTheSeed()
    {
        var config = new NaiveGpt2Config { VocabSize = Vocab, NEmbd = 16, NLayer = 1, NHead = 2, NPositions = 32 };
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, config, new TinyGpt2Options { Seed = 34, BosTokenId = TinyBpe.EndOfText, EosTokenId = TinyBpe.EndOfText });
        WriteTokenizer(dir, bos: false);
        string Sample(int seed) => CliRunner.Run("generate", "--model", dir, "--prompt", "the", "--max-new-tokens", "10",
            "--temperature", "1.5", "--top-p", "0.9", "--seed", seed.ToString(), "--json").Json().GetProperty("completion").GetString()!;
        Assert.Equal(Sample(1), Sample(1));
        Assert.NotEqual(Sample(1), Sample(2));
    }

    /// <summary>Independent byte-level decoding: vocabulary strings → bytes through GPT-2's table, special tokens skipped.</summary>
    static string Decode(IEnumerable<int> ids)
    {
        var byId = TinyBpe.Vocab().ToDictionary(kv => kv.Value, kv => kv.Key);
        var byteOf = new Dictionary<char, byte>();
        for (int b = 0; b < 256; b++) byteOf[TinyBpe.ByteSymbols[b][0]] = (byte)b;
        var bytes = new List<byte>();
        foreach (var id in ids)
        {
            if (id is TinyBpe.EndOfText or TinyBpe.BeginOfText) continue;
            if (id == TinyBpe.Tool) { bytes.AddRange(Encoding.UTF8.GetBytes("<tool>")); continue; }
            if (!byId.TryGetValue(id, out var token)) continue; // unused ids between the vocabulary and the added tokens decode to nothing
            bytes.AddRange(token.Select(c => byteOf[c]));
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
