using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Prompts;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>
/// Prompt tuning, P-tuning and prefix tuning against the plain-loop references (virtual tokens / prefix keys written
/// row by row into <see cref="NaiveHooks"/>), PEFT folders written by hand, the KV cache and PEFT's loss convention.
/// </summary>
public class SoftPromptTests
{
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 53, NEmbd = 24, NLayer = 2, NHead = 3, NPositions = 48 };
    // Grouped-query attention: 4 query heads share 2 key/value heads (head_dim 4, key/value width 8).
    static readonly NaiveLlamaConfig Llama = new() { VocabSize = 47, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2 };

    sealed record Loaded(CausalLM Model, string Dir, IReadOnlyDictionary<string, float[]> Weights, Func<NaiveHooks, Func<int[], float[,]>> Naive) : IDisposable
    {
        public void Dispose() => Model.Dispose();
    }

    static Loaded Load(string family)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        if (family == "gpt2")
        {
            var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 41 });
            return new(ModelLoader.Load(dir), dir, ckpt.Weights, h => new NaiveGpt2(Gpt2, ckpt.Weights) { Hooks = h }.Logits);
        }
        var l = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 42 });
        return new(ModelLoader.Load(dir), dir, l.Weights, h => new NaiveLlama(Llama, l.Weights) { Hooks = h }.Logits);
    }

    static int Vocab(string family) => family == "gpt2" ? Gpt2.VocabSize : Llama.VocabSize;
    static int Hidden(string family) => family == "gpt2" ? Gpt2.NEmbd : Llama.HiddenSize;

    static double[][] Rows(Tensor t2d)
    {
        var a = ToArray(t2d.detach().to_type(ScalarType.Float32).cpu());
        return Enumerable.Range(0, a.GetLength(0)).Select(i => Enumerable.Range(0, a.GetLength(1)).Select(j => (double)a[i, j]).ToArray()).ToArray();
    }

    // ---------------------------------------------------------------- prompt tuning

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void PromptTuningMatchesReference(string family)
    {
        using var m = Load(family);
        var pt = PromptTuningModel.Create(m.Model, new PromptTuningConfig { NumVirtualTokens = 5 }, seed: 3);
        var config = pt.Configs["default"];
        Assert.Equal(Hidden(family), config.TokenDim);
        Assert.Equal(1, config.NumTransformerSubmodules);
        var rows = Rows(pt.Module("default").EmbeddingWeight);
        Assert.Equal(5, rows.Length);
        var ids = RandomIds(9, Vocab(family), seed: 4);
        var expected = m.Naive(new NaiveHooks { VirtualTokens = rows })(ids);
        Assert.True(MaxAbsDiff(expected, Logits(m.Model, ids)) < 1e-4);
        // Only the prompt trains.
        var trainable = m.Model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();
        Assert.Equal(["prompt_encoder.default.embedding.weight"], trainable);
        using (pt.DisableAdapters())
            Assert.True(MaxAbsDiff(m.Naive(new NaiveHooks())(ids), Logits(m.Model, ids)) < 1e-4);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void EvalNllPredictsTheFirstTokenFromTheLastVirtualToken(string family)
    {
        using var m = Load(family);
        var pt = PromptTuningModel.Create(m.Model, new PromptTuningConfig { NumVirtualTokens = 4 }, seed: 5);
        // Make the last virtual token equal to the embedding of token z: a reference run with 3 virtual tokens and
        // z in front of the text then yields the last virtual position's logits as its first row.
        int z = 7;
        string embName = family == "gpt2" ? "transformer.wte.weight" : "model.embed_tokens.weight";
        var weight = pt.Module("default").EmbeddingWeight;
        using (no_grad()) weight[3].copy_(tensor(m.Weights[embName].Skip(z * Hidden(family)).Take(Hidden(family)).ToArray()));
        var rows = Rows(weight);
        var ids = RandomIds(10, Vocab(family), seed: 6);
        var reference = m.Naive(new NaiveHooks { VirtualTokens = rows[..3] })([z, .. ids]);
        double total = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            var logits = Enumerable.Range(0, reference.GetLength(1)).Select(j => (double)reference[i, j]).ToArray();
            double max = logits.Max(), lse = max + Math.Log(logits.Sum(x => Math.Exp(x - max)));
            total += lse - logits[ids[i]];
        }
        var result = Scoring.MeanNll(m.Model, ids);
        Assert.Equal(ids.Length, result.Tokens); // every real token, the first one included
        Assert.Equal(total / ids.Length, result.MeanNll, 4);
        // Without the prompt the first token has nothing to be predicted from.
        using (pt.DisableAdapters()) Assert.Equal(ids.Length - 1, Scoring.MeanNll(m.Model, ids).Tokens);
    }

    [Fact]
    public void TextInitEqualsTheEmbeddingsOfTheTokenizedText()
    {
        var config = new NaiveGpt2Config { VocabSize = 1003, NEmbd = 8, NLayer = 1, NHead = 2, NPositions = 32 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, config, new TinyGpt2Options { Seed = 8 });
        var tok = TinyBpe.TokenizerJson(postProcessor: TinyBpe.BosTemplate());
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), System.Text.Json.JsonSerializer.Serialize(tok));
        using var model = ModelLoader.Load(dir);
        const string text = "the cat sat";
        List<int> textIds = [TinyBpe.BeginOfText, .. TinyBpe.ReferenceEncode(text)];
        foreach (int n in new[] { 2, textIds.Count + 3 })
        {
            var pt = PromptTuningModel.Attach(model);
            pt.AddAdapter("a", new PromptTuningConfig { NumVirtualTokens = n, PromptTuningInitMode = PromptTuningInit.Text, PromptTuningInitText = text, TokenizerNameOrPath = dir });
            var expectedIds = Enumerable.Range(0, n).Select(i => textIds[i % textIds.Count]).ToArray(); // cut, or repeated then cut
            var rows = Rows(pt.Module("a").EmbeddingWeight);
            var wte = ckpt.Weights["transformer.wte.weight"];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < 8; j++) Assert.Equal(wte[expectedIds[i] * 8 + j], rows[i][j], 6);
            pt.Unload();
        }
    }

    [Fact]
    public void SampleVocabInitTakesRowsOfTheEmbedding()
    {
        using var m = Load("llama");
        var pt = PromptTuningModel.Create(m.Model, new PromptTuningConfig { NumVirtualTokens = 6, PromptTuningInitMode = PromptTuningInit.SampleVocab }, seed: 9);
        var rows = Rows(pt.Module("default").EmbeddingWeight);
        var emb = m.Weights["model.embed_tokens.weight"];
        int h = Llama.HiddenSize;
        foreach (var row in rows)
            Assert.Contains(Enumerable.Range(0, Llama.VocabSize), v => Enumerable.Range(0, h).All(j => Math.Abs(emb[v * h + j] - row[j]) < 1e-7));
    }

    // ---------------------------------------------------------------- KV cache

    static List<int> Greedy(CausalLM model, int[] prompt, int steps, bool useCache)
    {
        using var _ = no_grad();
        var ids = prompt.ToList();
        using var cache = useCache ? model.NewCache() : null;
        Tensor? next = null;
        for (int s = 0; s < steps; s++)
        {
            using var scope = NewDisposeScope();
            var input = useCache && s > 0 ? tensor(new long[] { ids[^1] }).unsqueeze(0) : tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
            var logits = model.Forward(input, cache);
            ids.Add((int)logits[0, -1].argmax().item<long>());
        }
        next?.Dispose();
        return ids;
    }

    [Theory]
    [InlineData("gpt2", "prompt")]
    [InlineData("llama", "prompt")]
    [InlineData("gpt2", "prefix")]
    [InlineData("llama", "prefix")]
    [InlineData("llama", "ptuning")]
    public void GenerationWithTheCacheEqualsGenerationWithout(string family, string method)
    {
        using var m = Load(family);
        var peft = new PeftModel(m.Model);
        PeftConfig config = method switch
        {
            "prompt" => new PromptTuningConfig { NumVirtualTokens = 4 },
            "prefix" => new PrefixTuningConfig { NumVirtualTokens = 3 },
            _ => new PromptEncoderConfig { NumVirtualTokens = 3, EncoderHiddenSize = 12 },
        };
        peft.AddAdapter("default", config, seed: 11);
        peft.SetAdapter("default");
        var prompt = RandomIds(5, Vocab(family), seed: 12);
        var withCache = Greedy(m.Model, prompt, 8, useCache: true);
        var without = Greedy(m.Model, prompt, 8, useCache: false);
        Assert.Equal(without, withCache);
        var adapted = Logits(m.Model, prompt);
        using (peft.DisableAdapters()) Assert.True(MaxAbsDiff(adapted, Logits(m.Model, prompt)) > 1e-3); // the adapter acts
    }

    // ---------------------------------------------------------------- prefix tuning

    /// <summary>PEFT's layout of the flattened prefix, by hand: row i, layer l, key (0) or value (1) = columns [(2l+kv)·D, (2l+kv+1)·D).</summary>
    static NaiveHooks PrefixHooks(double[][] flat, int layers, int dim) => new()
    {
        Prefix = l => (flat.Select(r => r.Skip(2 * l * dim).Take(dim).ToArray()).ToArray(),
                       flat.Select(r => r.Skip((2 * l + 1) * dim).Take(dim).ToArray()).ToArray()),
    };

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void PrefixTuningMatchesReferenceWithGqaAndPadding(string family)
    {
        using var m = Load(family);
        var prefix = PrefixTuningModel.Create(m.Model, new PrefixTuningConfig { NumVirtualTokens = 3 }, seed: 13);
        var config = prefix.Configs["default"];
        int kvDim = family == "gpt2" ? Gpt2.NEmbd : Llama.NumKeyValueHeads * (Llama.HiddenSize / Llama.NumAttentionHeads);
        Assert.Equal(kvDim, config.TokenDim); // PEFT sizes Llama-family prefixes by num_key_value_heads
        Assert.Equal(family == "gpt2" ? Gpt2.NHead : Llama.NumKeyValueHeads, config.NumAttentionHeads);
        Assert.Equal(kvDim, config.EncoderHiddenSize);
        var flat = Rows(prefix.PromptEmbeddings("default"));
        Assert.Equal(2 * 2 * kvDim, flat[0].Length);
        var naive = m.Naive(PrefixHooks(flat, 2, kvDim));
        var ids = RandomIds(10, Vocab(family), seed: 14);
        var expected = naive(ids);
        Assert.True(MaxAbsDiff(expected, Logits(m.Model, ids)) < 1e-4);
        using (no_grad())
        {
            var batch = tensor(ids.Select(i => (long)i).Concat(ids[..6].Select(i => (long)i)).Concat([0L, 0L, 0L, 0L]).ToArray()).view(2, 10);
            var mask = tensor(Enumerable.Repeat(1L, 16).Concat([0L, 0L, 0L, 0L]).ToArray()).view(2, 10);
            using var logits = m.Model.Forward(batch, null, mask);
            Assert.True(MaxAbsDiff(expected, ToArray(logits[0])) < 1e-4);
            Assert.True(MaxAbsDiff(naive(ids[..6]), ToArray(logits[1].narrow(0, 0, 6))) < 1e-4);
        }
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void PrefixGradientsAreTheSameWithGradientCheckpointing(string family)
    {
        using var m = Load(family);
        var prefix = PrefixTuningModel.Create(m.Model, new PrefixTuningConfig { NumVirtualTokens = 2, PrefixProjection = true, EncoderHiddenSize = 5 }, seed: 25);
        var ids = tensor(RandomIds(6, Vocab(family), seed: 26).Select(i => (long)i).ToArray()).unsqueeze(0);
        float[] Gradients(bool checkpointing)
        {
            m.Model.GradientCheckpointing = checkpointing;
            var ps = prefix.AdapterParameters().Select(p => p.Param).ToList();
            foreach (var p in ps) p.grad?.zero_();
            using (var logits = m.Model.Forward(ids)) using (var loss = logits.square().mean()) loss.backward();
            return ps.SelectMany(p => p.grad!.data<float>().ToArray()).ToArray();
        }
        var plain = Gradients(false);
        var checkpointed = Gradients(true);
        Assert.Contains(plain, g => Math.Abs(g) > 1e-6);
        for (int i = 0; i < plain.Length; i++) Assert.Equal(plain[i], checkpointed[i], 4);
    }

    [Fact]
    public void PrefixProjectionIsPeftsTanhMlpAndSavesItsOutput()
    {
        using var m = Load("llama");
        var prefix = PrefixTuningModel.Create(m.Model, new PrefixTuningConfig { NumVirtualTokens = 2, PrefixProjection = true, EncoderHiddenSize = 6 }, seed: 15);
        var p = m.Model.named_parameters().Where(x => x.name.StartsWith("prompt_encoder.default.")).ToDictionary(x => x.name["prompt_encoder.default.".Length..], x => Rows(x.parameter.dim() == 1 ? x.parameter.unsqueeze(0) : x.parameter));
        Assert.Equal(["embedding.weight", "transform.0.bias", "transform.0.weight", "transform.2.bias", "transform.2.weight"], p.Keys.Order().ToArray());
        // flat = W2·tanh(W1·e + b1) + b2, by hand.
        var flat = p["embedding.weight"].Select(e =>
        {
            var h = p["transform.0.weight"].Select((w, o) => Math.Tanh(w.Zip(e, (a, b) => a * b).Sum() + p["transform.0.bias"][0][o])).ToArray();
            return p["transform.2.weight"].Select((w, o) => w.Zip(h, (a, b) => a * b).Sum() + p["transform.2.bias"][0][o]).ToArray();
        }).ToArray();
        Assert.Equal(2 * 2 * 8, flat[0].Length);
        var ids = RandomIds(7, Llama.VocabSize, seed: 16);
        var expected = m.Naive(PrefixHooks(flat, 2, 8))(ids);
        Assert.True(MaxAbsDiff(expected, Logits(m.Model, ids)) < 1e-4);

        // save_pretrained writes the projection's output; loading it back needs no MLP.
        using var dir = new TempDir();
        prefix.SaveAdapter(dir.Path, "default");
        var saved = NaiveSafetensors.Read(dir.File("adapter_model.safetensors"));
        Assert.Equal(["prompt_embeddings"], saved.Keys.ToArray());
        Assert.Equal([2, 32], saved["prompt_embeddings"].Shape);
        using var m2 = Load("llama");
        var loaded = PeftModel.Load(m2.Model, [dir.Path]);
        Assert.True(MaxAbsDiff(expected, Logits(m2.Model, ids)) < 1e-4);
        // PEFT's counts: training holds embedding + MLP; the loaded adapter holds the flattened prefix only.
        Assert.Equal(2 * 8 + (8 * 6 + 6) + (6 * 32 + 32), prefix.Summary("default").Parameters);
        Assert.Equal(2 * 32, loaded.TunerOf("default").Summary("default").Parameters);
    }

    // ---------------------------------------------------------------- P-tuning

    [Fact]
    public void PTuningMlpMatchesReference()
    {
        using var m = Load("gpt2");
        var pt = PTuningModel.Create(m.Model, new PromptEncoderConfig { NumVirtualTokens = 3, EncoderHiddenSize = 10 }, seed: 17);
        var p = m.Model.named_parameters().Where(x => x.name.StartsWith("prompt_encoder.default.")).ToDictionary(x => x.name["prompt_encoder.default.".Length..], x => Rows(x.parameter.dim() == 1 ? x.parameter.unsqueeze(0) : x.parameter));
        double[] Lin(string name, double[] x, bool relu) => p[name + ".weight"].Select((w, o) =>
        {
            double y = w.Zip(x, (a, b) => a * b).Sum() + p[name + ".bias"][0][o];
            return relu ? Math.Max(0, y) : y;
        }).ToArray();
        var rows = p["embedding.weight"].Select(e => Lin("mlp_head.4", Lin("mlp_head.2", Lin("mlp_head.0", e, true), true), false)).ToArray();
        var ids = RandomIds(8, Gpt2.VocabSize, seed: 18);
        Assert.True(MaxAbsDiff(m.Naive(new NaiveHooks { VirtualTokens = rows })(ids), Logits(m.Model, ids)) < 1e-4);
    }

    [Fact]
    public void PTuningLstmSavesItsOutputAndLoadsBack()
    {
        using var m = Load("llama");
        var pt = PTuningModel.Create(m.Model, new PromptEncoderConfig { NumVirtualTokens = 3, EncoderReparameterizationType = "LSTM", EncoderHiddenSize = 5 }, seed: 19);
        var names = m.Model.named_parameters().Where(x => x.name.StartsWith("prompt_encoder.default.")).Select(x => x.name).ToList();
        Assert.Contains("prompt_encoder.default.lstm_head.weight_ih_l1_reverse", names);
        Assert.Contains("prompt_encoder.default.mlp_head.2.weight", names);
        var ids = RandomIds(8, Llama.VocabSize, seed: 20);
        var before = Logits(m.Model, ids);
        using var dir = new TempDir();
        pt.SaveAdapter(dir.Path, "default");
        Assert.Equal([3, 16], NaiveSafetensors.Read(dir.File("adapter_model.safetensors"))["prompt_embeddings"].Shape);
        var rows = NaiveSafetensors.Read(dir.File("adapter_model.safetensors"))["prompt_embeddings"].Values;
        var virtualRows = Enumerable.Range(0, 3).Select(i => rows.Skip(i * 16).Take(16).Select(x => (double)x).ToArray()).ToArray();
        Assert.True(MaxAbsDiff(m.Naive(new NaiveHooks { VirtualTokens = virtualRows })(ids), before) < 1e-4);
        using var m2 = Load("llama");
        PeftModel.Load(m2.Model, [dir.Path]);
        Assert.True(MaxAbsDiff(before, Logits(m2.Model, ids)) < 1e-5);
    }

    // ---------------------------------------------------------------- PEFT folders written by hand

    static string WriteFolder(TempDir dir, string name, string configJson, float[] values, int[] shape)
    {
        string folder = Path.Combine(dir.Path, name);
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "adapter_config.json"), configJson);
        NaiveSafetensors.Write(Path.Combine(folder, "adapter_model.safetensors"), [new NaiveTensor("prompt_embeddings", NaiveDType.F32, shape, values)], new Dictionary<string, string> { ["format"] = "pt" });
        return folder;
    }

    static float[] RandomValues(int count, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
    }

    const string PromptTuningJson = """
        {
          "auto_mapping": null,
          "base_model_name_or_path": "tiny",
          "inference_mode": true,
          "num_attention_heads": 4,
          "num_layers": 2,
          "num_transformer_submodules": 1,
          "num_virtual_tokens": NVT,
          "peft_type": "PROMPT_TUNING",
          "peft_version": "0.17.1",
          "prompt_tuning_init": "RANDOM",
          "prompt_tuning_init_text": null,
          "revision": null,
          "task_type": "CAUSAL_LM",
          "token_dim": 16,
          "tokenizer_kwargs": null,
          "tokenizer_name_or_path": null
        }
        """;

    [Fact]
    public void HandWrittenPeftFoldersLoadAndSwitchByName()
    {
        using var m = Load("llama");
        using var dir = new TempDir();
        var a = RandomValues(3 * 16, 21);
        var b = RandomValues(5 * 16, 22);
        string fa = WriteFolder(dir, "a", PromptTuningJson.Replace("NVT", "3"), a, [3, 16]);
        string fb = WriteFolder(dir, "b", PromptTuningJson.Replace("NVT", "5"), b, [5, 16]);
        var prefixValues = RandomValues(2 * 2 * 2 * 8, 23);
        string fp = WriteFolder(dir, "p", """
            {"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 2, "token_dim": 8, "num_attention_heads": 2,
             "num_layers": 2, "num_transformer_submodules": 1, "encoder_hidden_size": 8, "prefix_projection": false, "inference_mode": true}
            """, prefixValues, [2, 32]);
        var peft = new PeftModel(m.Model);
        peft.LoadAdapter(fa, "a");
        peft.LoadAdapter(fb, "b");
        peft.LoadAdapter(fp, "p");
        var ids = RandomIds(8, Llama.VocabSize, seed: 24);
        double[][] RowsOf(float[] v, int n, int d) => Enumerable.Range(0, n).Select(i => v.Skip(i * d).Take(d).Select(x => (double)x).ToArray()).ToArray();
        peft.SetAdapter("a");
        Assert.True(MaxAbsDiff(m.Naive(new NaiveHooks { VirtualTokens = RowsOf(a, 3, 16) })(ids), Logits(m.Model, ids)) < 1e-4);
        peft.SetAdapter("b");
        Assert.True(MaxAbsDiff(m.Naive(new NaiveHooks { VirtualTokens = RowsOf(b, 5, 16) })(ids), Logits(m.Model, ids)) < 1e-4);
        peft.SetAdapter("p");
        Assert.True(MaxAbsDiff(m.Naive(PrefixHooks(RowsOf(prefixValues, 2, 32), 2, 8))(ids), Logits(m.Model, ids)) < 1e-4);
        // Saving writes the same tensor and PEFT's config fields back.
        using var out_ = new TempDir();
        peft.Save(out_.Path, "b");
        var saved = NaiveSafetensors.Read(Path.Combine(out_.Path, "b", "adapter_model.safetensors"))["prompt_embeddings"];
        Assert.Equal(b, saved.Values);
        var json = File.ReadAllText(Path.Combine(out_.Path, "b", "adapter_config.json"));
        Assert.Contains("\"peft_type\": \"PROMPT_TUNING\"", json);
        Assert.Contains("\"num_virtual_tokens\": 5", json);
        Assert.Contains("\"prompt_tuning_init\": \"RANDOM\"", json);
        // inspect's numbers: PEFT counts the prompt rows as parameters.
        Assert.Equal(5 * 16, peft.TunerOf("b").Summary("b").Parameters);
        Assert.Equal(2 * 32, peft.TunerOf("p").Summary("p").Parameters);
    }

    [Fact]
    public void BadInputIsOneLineErrorNamingFileAndTensor()
    {
        using var m = Load("llama");
        using var dir = new TempDir();
        var peft = new PeftModel(m.Model);
        var e1 = Assert.Throws<PeftSharpException>(() => peft.AddAdapter("x", new PromptTuningConfig { NumVirtualTokens = 0 }));
        Assert.Contains("num_virtual_tokens", e1.Message);
        string zero = WriteFolder(dir, "zero", PromptTuningJson.Replace("NVT", "0"), [], [0, 16]);
        var e2 = Assert.Throws<PeftSharpException>(() => peft.LoadAdapter(zero, "z"));
        Assert.Contains("adapter_config.json", e2.Message);
        Assert.Contains("num_virtual_tokens", e2.Message);
        // The tensor is [3, 24] but the model's hidden size is 16 (config claims token_dim 16).
        string wide = WriteFolder(dir, "wide", PromptTuningJson.Replace("NVT", "3"), RandomValues(72, 1), [3, 24]);
        var e3 = Assert.Throws<PeftSharpException>(() => peft.LoadAdapter(wide, "w"));
        Assert.Contains("adapter_model.safetensors", e3.Message);
        Assert.Contains("'prompt_embeddings'", e3.Message);
        Assert.Contains("[3, 16]", e3.Message);
        Assert.DoesNotContain('\n', e3.Message);
        // A prefix for 3 layers on a 2-layer model.
        string deep = WriteFolder(dir, "deep", """
            {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2, "token_dim": 8, "num_attention_heads": 2, "num_layers": 3, "num_transformer_submodules": 1}
            """, RandomValues(2 * 48, 2), [2, 48]);
        var e4 = Assert.Throws<PeftSharpException>(() => peft.LoadAdapter(deep, "d"));
        Assert.Contains("num_layers", e4.Message);
        Assert.Contains("adapter_config.json", e4.Message);
        // A prefix tensor with the wrong layer count while the config fits the model.
        string short_ = WriteFolder(dir, "short", """
            {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2, "token_dim": 8, "num_attention_heads": 2, "num_layers": 2, "num_transformer_submodules": 1}
            """, RandomValues(2 * 16, 3), [2, 16]);
        var e5 = Assert.Throws<PeftSharpException>(() => peft.LoadAdapter(short_, "s"));
        Assert.Contains("'prompt_embeddings'", e5.Message);
        Assert.Contains("num_layers 2", e5.Message);
        Assert.Empty(peft.Adapters);
    }
}
