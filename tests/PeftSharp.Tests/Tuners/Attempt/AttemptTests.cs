using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Attempt;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.Attempt;

/// <summary>
/// ATTEMPT against a plain loop: max-pool, down/SiLU/up projection, layer norm, scores against the max-pooled prompts,
/// softmax and the mixture written element by element; one source with the attention forced onto it gives that
/// source's prompt; saved folders read back.
/// </summary>
public class AttemptTests
{
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 41, NEmbd = 12, NLayer = 1, NHead = 2, NPositions = 40 };
    const int N = 3, D = 12;

    static (CausalLM Model, IReadOnlyDictionary<string, float[]> Weights, Func<NaiveHooks, Func<int[], float[,]>> Naive) Load()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 81 });
        return (ModelLoader.Load(dir), ckpt.Weights, h => new NaiveGpt2(Gpt2, ckpt.Weights) { Hooks = h }.Logits);
    }

    static float[] Values(Tensor t) => t.detach().to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();

    static float[] Random(int count, int seed, double scale = 1)
    {
        var rnd = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)((rnd.NextDouble() * 2 - 1) * scale)).ToArray();
    }

    static string WriteSource(string root, string name, float[] values)
    {
        string dir = Path.Combine(root, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), $$"""{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": {{N}}, "token_dim": {{D}}, "task_type": "CAUSAL_LM"}""");
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), [new NaiveTensor("prompt_embeddings", NaiveDType.F32, [N, D], values)]);
        return dir;
    }

    /// <summary>ATTEMPT's prompt for one sequence whose input embeddings are <paramref name="x"/> [T][D], by loops.</summary>
    static double[][] LoopPrompt(double[][] x, float[][] prompts, float[] target, float[] down, float[] up, float[] lnW, float[] lnB, int h, double temperature)
    {
        // Max-pool over tokens.
        var pooled = Enumerable.Range(0, D).Select(j => x.Max(row => row[j])).ToArray();
        var hidden = new double[h];
        for (int i = 0; i < h; i++)
        {
            double s = 0;
            for (int j = 0; j < D; j++) s += down[i * D + j] * pooled[j];
            hidden[i] = s / (1 + Math.Exp(-s)); // SiLU
        }
        var u = new double[D];
        for (int j = 0; j < D; j++)
        {
            double s = 0;
            for (int i = 0; i < h; i++) s += up[j * h + i] * hidden[i];
            u[j] = s;
        }
        double mean = u.Average(), variance = u.Select(v => (v - mean) * (v - mean)).Average();
        var q = Enumerable.Range(0, D).Select(j => (u[j] - mean) / Math.Sqrt(variance + 1e-5) * lnW[j] + lnB[j]).ToArray();
        // Keys: each prompt (sources, then the target) max-pooled over its tokens.
        var all = prompts.Append(target).ToArray();
        var scores = all.Select(p => Enumerable.Range(0, D).Sum(j => q[j] * Enumerable.Range(0, N).Max(i => (double)p[i * D + j])) / temperature).ToArray();
        double max = scores.Max();
        var e = scores.Select(s => Math.Exp(s - max)).ToArray();
        var a = e.Select(v => v / e.Sum()).ToArray();
        var result = new double[N][];
        for (int i = 0; i < N; i++)
        {
            result[i] = new double[D];
            for (int j = 0; j < D; j++)
            {
                double v = target[i * D + j];
                for (int k = 0; k < all.Length; k++) v += a[k] * all[k][i * D + j];
                result[i][j] = v;
            }
        }
        return result;
    }

    static double[][] Embeddings(IReadOnlyDictionary<string, float[]> weights, int[] ids) =>
        ids.Select(id => Enumerable.Range(0, D).Select(j => (double)weights["transformer.wte.weight"][id * D + j]).ToArray()).ToArray();

    [Fact]
    public void PromptIsTheTargetPlusTheAttentionMixtureAsAPlainLoop()
    {
        var (model, weights, naive) = Load();
        using var _ = model;
        using var dir = new TempDir();
        var s0 = Random(N * D, 1);
        var s1 = Random(N * D, 2);
        const int h = 5;
        var att = AttemptModel.Create(model, new AttemptConfig
        {
            NumVirtualTokens = N, SourcePrompts = [WriteSource(dir.Path, "s0", s0), WriteSource(dir.Path, "s1", s1)], AttnHiddenSize = h, Temperature = 0.7, TargetInit = "RANDOM",
        }, seed: 3);
        var m = att.AttemptModule("default");
        // Non-trivial layer norm so that its weight and bias are checked too.
        using (no_grad()) { m.NormWeight.copy_(tensor(Random(D, 4, 2))); m.NormBias.copy_(tensor(Random(D, 5))); }
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).Order().ToArray();
        Assert.Equal(["prompt_encoder.default.attn_W_down.weight", "prompt_encoder.default.attn_W_up.weight", "prompt_encoder.default.embedding.weight",
                      "prompt_encoder.default.layer_norm.bias", "prompt_encoder.default.layer_norm.weight"], trainable);
        var target = Values(m.EmbeddingWeight);
        var down = Values(m.DownWeight); var up = Values(m.UpWeight); var lnW = Values(m.NormWeight); var lnB = Values(m.NormBias);

        foreach (int seed in new[] { 6, 7 })
        {
            var ids = RandomIds(5, Gpt2.VocabSize, seed);
            var prompt = LoopPrompt(Embeddings(weights, ids), [s0, s1], target, down, up, lnW, lnB, h, 0.7);
            var expected = naive(new NaiveHooks { VirtualTokens = prompt })(ids);
            Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4);
        }

        // A padded batch: the padding stays out of the max-pool.
        var a = RandomIds(5, Gpt2.VocabSize, 8);
        var b = RandomIds(3, Gpt2.VocabSize, 9);
        using var emb = tensor(Embeddings(weights, [.. a, .. b, 0, 0]).SelectMany(r => r.Select(v => (float)v)).ToArray(), [2, 5, D]);
        using var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 0, 0 }, [2, 5]);
        using var prompts = m.Prompts(emb, mask);
        var got = Values(prompts);
        var wantB = LoopPrompt(Embeddings(weights, b), [s0, s1], target, down, up, lnW, lnB, h, 0.7).SelectMany(r => r).ToArray();
        Assert.True(wantB.Select((v, i) => Math.Abs(v - got[N * D + i])).Max() < 1e-5);
    }

    [Fact]
    public void OneSourceWithTheAttentionForcedOntoItGivesThatPrompt()
    {
        var (model, weights, naive) = Load();
        using var _ = model;
        using var dir = new TempDir();
        var s0 = Random(N * D, 11);
        var att = AttemptModel.Create(model, new AttemptConfig { NumVirtualTokens = N, SourcePrompts = [WriteSource(dir.Path, "s0", s0)], AttnHiddenSize = 4, Temperature = 1e-3 }, seed: 12);
        var m = att.AttemptModule("default");
        // Target 0 (ZERO init) and W_up = 0: the query is the layer norm's bias, set to the source's max-pooled key, so
        // that the source scores |key|²/T and the zero target 0: the softmax puts all weight on the source.
        var key = Enumerable.Range(0, D).Select(j => Enumerable.Range(0, N).Max(i => s0[i * D + j])).ToArray();
        using (no_grad()) { m.UpWeight.zero_(); m.NormBias.copy_(tensor(key)); }
        Assert.Equal(new float[N * D], Values(m.EmbeddingWeight));
        var ids = RandomIds(6, Gpt2.VocabSize, 13);
        using (var emb = tensor(Embeddings(weights, ids).SelectMany(r => r.Select(v => (float)v)).ToArray(), [1, 6, D]))
        using (var a = m.Attention(emb))
            Assert.Equal(1.0, Values(a)[0], 6);
        var rows = Enumerable.Range(0, N).Select(i => Enumerable.Range(0, D).Select(j => (double)s0[i * D + j]).ToArray()).ToArray();
        Assert.True(MaxAbsDiff(naive(new NaiveHooks { VirtualTokens = rows })(ids), Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void SavedFolderReadsBackWithTheSameLogits()
    {
        var (model, _, _) = Load();
        using var __ = model;
        using var dir = new TempDir();
        var att = AttemptModel.Create(model, new AttemptConfig { NumVirtualTokens = N, SourcePrompts = [WriteSource(dir.Path, "s0", Random(N * D, 21)), WriteSource(dir.Path, "s1", Random(N * D, 22))], AttnHiddenSize = 6, TargetInit = "RANDOM" }, seed: 23);
        var ids = RandomIds(7, Gpt2.VocabSize, 24);
        var before = Logits(model, ids);
        string saved = Path.Combine(dir.Path, "saved");
        att.SaveAdapter(saved, "default");
        var keys = NaiveSafetensors.Read(Path.Combine(saved, "adapter_model.safetensors")).Keys.Order().ToArray();
        Assert.Equal(["attn_W_down.weight", "attn_W_up.weight", "layer_norm.bias", "layer_norm.weight", "prompt_embeddings", "source_prompts"], keys);
        att.Unload();
        var peft = PeftModel.Load(model, [saved], ["loaded"]);
        Assert.True(MaxAbsDiff(before, Logits(model, ids)) < 1e-5);
    }

    [Fact]
    public void BadInputIsAOneLineError()
    {
        var (model, _, _) = Load();
        using var __ = model;
        using var dir = new TempDir();
        string wide = Path.Combine(dir.Path, "wide");
        Directory.CreateDirectory(wide);
        File.WriteAllText(Path.Combine(wide, "adapter_config.json"), """{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 5}""");
        NaiveSafetensors.Write(Path.Combine(wide, "adapter_model.safetensors"), [new NaiveTensor("prompt_embeddings", NaiveDType.F32, [5, D], new float[5 * D])]);
        var e = Assert.Throws<PeftSharpException>(() => AttemptModel.Create(model, new AttemptConfig { NumVirtualTokens = N, SourcePrompts = [wide] }));
        Assert.Contains("needs [3, 12]", e.Message);
        e = Assert.Throws<PeftSharpException>(() => AttemptConfig.FromJson("""{"peft_type": "ATTEMPT", "num_virtual_tokens": 3}"""));
        Assert.Contains("num_sources", e.Message);
        e = Assert.Throws<PeftSharpException>(() => AttemptConfig.FromJson("""{"peft_type": "ATTEMPT", "num_virtual_tokens": 3, "num_sources": 1, "temperature": 0}"""));
        Assert.Contains("temperature", e.Message);
    }
}
