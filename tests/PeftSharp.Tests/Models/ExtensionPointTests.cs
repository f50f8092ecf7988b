using PeftSharp.Models;
using PeftSharp.Models.Layers;
using PeftSharp.Tests.Reference;
using TorchSharp;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>
/// The five extension points (docs/architecture.md) on GPT-2 and Llama, against the plain-loop references with the
/// same functions written row by row (<see cref="NaiveHooks"/>).
/// </summary>
public class ExtensionPointTests
{
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 53, NEmbd = 24, NLayer = 2, NHead = 3, NPositions = 40 };
    // Grouped-query attention: 4 query heads share 2 key/value heads.
    static readonly NaiveLlamaConfig Llama = new() { VocabSize = 47, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2 };

    static (CausalLM Model, NaiveGpt2 Naive) LoadGpt2(NaiveHooks? hooks = null)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 31 });
        return (ModelLoader.Load(dir), new NaiveGpt2(Gpt2, ckpt.Weights) { Hooks = hooks ?? new() });
    }

    static (CausalLM Model, NaiveLlama Naive) LoadLlama(NaiveHooks? hooks = null)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 32 });
        return (ModelLoader.Load(dir), new NaiveLlama(Llama, ckpt.Weights) { Hooks = hooks ?? new() });
    }

    static CausalLM Load(string family) => family == "gpt2" ? LoadGpt2().Model : LoadLlama().Model;

    static Tensor LogitsTensor(CausalLM model, int[] ids, KvCache? cache = null, Tensor? mask = null)
    {
        using var _ = no_grad();
        return model.Forward(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0), cache, mask);
    }

    sealed class FuncHook(HookPlacement placement, Func<SubLayerCall, Tensor> f) : ISubLayerHook
    {
        public HookPlacement Placement => placement;
        public Tensor Forward(SubLayerCall call) => f(call);
    }

    // ---------------------------------------------------------------- 2. sub-layer hooks

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void ZeroHooksLeaveLogitsBitIdentical(string family)
    {
        using var model = Load(family);
        var ids = RandomIds(11, 40, seed: 1);
        using var before = LogitsTensor(model, ids);
        var handles = new List<IDisposable>();
        for (int l = 0; l < model.Config.Layers; l++)
            foreach (var kind in new[] { SubLayerKind.Attention, SubLayerKind.Mlp })
            {
                handles.Add(model.Extensions.AddSubLayerHook(l, kind, new FuncHook(HookPlacement.Serial, c => c.Output)));
                handles.Add(model.Extensions.AddSubLayerHook(l, kind, new FuncHook(HookPlacement.Parallel, c => zeros_like(c.Input))));
            }
        Assert.Equal(4, model.Extensions.SubLayerHooks(1, SubLayerKind.Mlp).Count + model.Extensions.SubLayerHooks(0, SubLayerKind.Attention).Count);
        using var after = LogitsTensor(model, ids);
        Assert.True(before.eq(after).all().item<bool>());
        foreach (var h in handles) h.Dispose();
        Assert.Empty(model.Extensions.SubLayerHooks(0, SubLayerKind.Attention));
    }

    // Parallel beside attention: 0.5·tanh(input); serial after the MLP: 1.5·output + 0.1·sin(residual).
    static readonly NaiveHooks KnownFunctions = new()
    {
        SubLayer = (layer, kind, residual, input, output) => kind == "attention"
            ? output.Select((o, j) => o + 0.5 * Math.Tanh(input[j])).ToArray()
            : output.Select((o, j) => 1.5 * o + 0.1 * Math.Sin(residual[j]) * (layer + 1)).ToArray(),
    };

    static void AddKnownFunctions(CausalLM model)
    {
        for (int l = 0; l < model.Config.Layers; l++)
        {
            int layer = l;
            model.Extensions.AddSubLayerHook(l, SubLayerKind.Attention, new FuncHook(HookPlacement.Parallel, c => c.Input.tanh().mul(0.5)));
            model.Extensions.AddSubLayerHook(l, SubLayerKind.Mlp, new FuncHook(HookPlacement.Serial,
                c => c.Output.mul(1.5).add(c.Residual.sin().mul(0.1 * (layer + 1)))));
        }
    }

    [Fact]
    public void Gpt2HooksMatchPlainLoopReference()
    {
        var (model, naive) = LoadGpt2(KnownFunctions);
        using var _ = model;
        AddKnownFunctions(model);
        var ids = RandomIds(13, Gpt2.VocabSize, seed: 2);
        Assert.True(MaxAbsDiff(naive.Logits(ids), Logits(model, ids)) < 1e-4);
        Assert.True(MaxAbsDiff(new NaiveGpt2(Gpt2, GetWeights(naive)).Logits(ids), Logits(model, ids)) > 1e-2); // the hooks matter
    }

    [Fact]
    public void LlamaHooksMatchPlainLoopReference()
    {
        var (model, naive) = LoadLlama(KnownFunctions);
        using var _ = model;
        AddKnownFunctions(model);
        var ids = RandomIds(13, Llama.VocabSize, seed: 3);
        Assert.True(MaxAbsDiff(naive.Logits(ids), Logits(model, ids)) < 1e-4);
    }

    [Fact]
    public void HooksRunInsideGradientCheckpointedBlocks()
    {
        var (model, naive) = LoadLlama(KnownFunctions);
        using var _ = model;
        AddKnownFunctions(model);
        model.GradientCheckpointing = true;
        var ids = RandomIds(9, Llama.VocabSize, seed: 4);
        foreach (var p in model.parameters()) p.requires_grad = true;
        using var logits = model.Forward(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0));
        Assert.True(MaxAbsDiff(naive.Logits(ids), ToArray(logits[0].detach())) < 1e-4);
    }

    static IReadOnlyDictionary<string, float[]> GetWeights(NaiveGpt2 naive) =>
        (IReadOnlyDictionary<string, float[]>)typeof(NaiveGpt2).GetField("_weights", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(naive)!;

    // ---------------------------------------------------------------- 3. key/value prefixes

    sealed class FixedPrefix(double[][][] keys, double[][][] values, int kvHeads) : IKvPrefix
    {
        public int Length => keys[0].Length;
        public (Tensor Keys, Tensor Values) For(int layer, long batch, ScalarType dtype, Device device) =>
            (ToHeads(keys[layer]), ToHeads(values[layer]));
        Tensor ToHeads(double[][] rows)
        {
            int p = rows.Length, dim = rows[0].Length;
            var flat = rows.SelectMany(r => r.Select(x => (float)x)).ToArray();
            return tensor(flat).view(p, kvHeads, dim / kvHeads).permute(1, 0, 2).unsqueeze(0);
        }
    }

    static double[][][] RandomRows(int layers, int rows, int dim, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, layers).Select(_ => Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, dim).Select(_ => r.NextDouble() * 2 - 1).ToArray()).ToArray()).ToArray();
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void PrefixMatchesReferenceWithCacheAndMask(string family)
    {
        int layers = 2, p = 3;
        int kvHeads = family == "gpt2" ? Gpt2.NHead : Llama.NumKeyValueHeads;
        int kvDim = family == "gpt2" ? Gpt2.NEmbd : Llama.NumKeyValueHeads * (Llama.HiddenSize / Llama.NumAttentionHeads);
        var keys = RandomRows(layers, p, kvDim, 5);
        var values = RandomRows(layers, p, kvDim, 6);
        var hooks = new NaiveHooks { Prefix = l => (keys[l], values[l]) };
        CausalLM model;
        Func<int[], float[,]> naive;
        if (family == "gpt2") { var (m, n) = LoadGpt2(hooks); model = m; naive = n.Logits; }
        else { var (m, n) = LoadLlama(hooks); model = m; naive = n.Logits; }
        using var _ = model;
        using var handle = model.Extensions.AddKvPrefix(new FixedPrefix(keys, values, kvHeads));
        Assert.Equal(p, model.Extensions.PrefixLength);
        var ids = RandomIds(10, 40, seed: 7);
        var expected = naive(ids);
        Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4);

        // KV cache: the prefix enters the cache once; real positions continue after it.
        using (var cache = model.NewCache())
        {
            using var first = LogitsTensor(model, ids[..6], cache);
            Assert.Equal(p + 6, cache.Length);
            var rows = new List<float[,]> { ToArray(first[0]) };
            for (int i = 6; i < ids.Length; i++)
            {
                using var step = LogitsTensor(model, [ids[i]], cache);
                rows.Add(ToArray(step[0]));
            }
            var stitched = Stack(rows);
            Assert.True(MaxAbsDiff(expected, stitched) < 1e-4);
        }

        // A right-padded batch with an attention mask over the real tokens: the prefix stays visible.
        using (no_grad())
        {
            var batch = tensor(ids.Select(i => (long)i).Concat(ids[..7].Select(i => (long)i)).Concat([0L, 0L, 0L]).ToArray()).view(2, 10);
            var mask = tensor(Enumerable.Repeat(1L, 17).Concat([0L, 0L, 0L]).ToArray()).view(2, 10);
            using var logits = model.Forward(batch, null, mask);
            Assert.True(MaxAbsDiff(expected, ToArray(logits[0])) < 1e-4);
            Assert.True(MaxAbsDiff(naive(ids[..7]), ToArray(logits[1].narrow(0, 0, 7))) < 1e-4);
        }
    }

    static float[,] Stack(List<float[,]> parts)
    {
        int rows = parts.Sum(p => p.GetLength(0)), cols = parts[0].GetLength(1), r = 0;
        var result = new float[rows, cols];
        foreach (var part in parts)
            for (int i = 0; i < part.GetLength(0); i++, r++)
                for (int j = 0; j < cols; j++) result[r, j] = part[i, j];
        return result;
    }

    // ---------------------------------------------------------------- 4. input-embedding rewrite

    sealed class PrependRows(double[][] rows) : IInputEmbeddingRewrite
    {
        public int PrependedTokens => rows.Length;
        public Tensor Rewrite(Tensor embeddings, Tensor inputIds)
        {
            var virtualRows = tensor(rows.SelectMany(r => r.Select(x => (float)x)).ToArray()).view(rows.Length, -1);
            return cat([virtualRows.unsqueeze(0).expand(embeddings.shape[0], -1, -1).to_type(embeddings.dtype), embeddings], 1);
        }
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void VirtualTokensMatchReferenceAndAreDroppedFromTheOutput(string family)
    {
        int hidden = family == "gpt2" ? Gpt2.NEmbd : Llama.HiddenSize;
        var rows = RandomRows(1, 4, hidden, 8)[0];
        var hooks = new NaiveHooks { VirtualTokens = rows };
        CausalLM model;
        Func<int[], float[,]> naive;
        if (family == "gpt2") { var (m, n) = LoadGpt2(hooks); model = m; naive = n.Logits; }
        else { var (m, n) = LoadLlama(hooks); model = m; naive = n.Logits; }
        using var _ = model;
        using var handle = model.Extensions.AddInputRewrite(new PrependRows(rows));
        var ids = RandomIds(9, 40, seed: 9);
        var expected = naive(ids);
        using var logits = LogitsTensor(model, ids);
        Assert.Equal(new long[] { 1, 9, model.Config.VocabSize }, logits.shape);
        Assert.True(MaxAbsDiff(expected, ToArray(logits[0])) < 1e-4);

        using var cache = model.NewCache();
        using var first = LogitsTensor(model, ids[..8], cache);
        Assert.Equal(4 + 8, cache.Length);
        using var next = LogitsTensor(model, [ids[8]], cache);
        Assert.True(MaxAbsDiff(expected, Stack([ToArray(first[0]), ToArray(next[0])])) < 1e-4);
    }

    // ---------------------------------------------------------------- 5. hidden-state taps

    sealed class RecordingTap : IHiddenStateTap
    {
        public readonly List<(int Layer, float[,] Hidden)> Seen = [];
        public void Observe(int layer, Tensor hidden) => Seen.Add((layer, ToArray(hidden[0].detach())));
        public Tensor Final(Tensor hidden) => hidden.mul(2);
    }

    [Fact]
    public void TapsSeeEveryLayerAndMayRewriteTheFinalHiddenStates()
    {
        var (model, naive) = LoadLlama();
        using var _ = model;
        var ids = RandomIds(7, Llama.VocabSize, seed: 10);
        var states = naive.HiddenStates(ids);
        var tap = new RecordingTap();
        using (model.Extensions.AddHiddenStateTap(tap))
        {
            var logits = Logits(model, ids);
            Assert.Equal([0, 1, 2], tap.Seen.Select(s => s.Layer));
            for (int l = 0; l < Llama.NumHiddenLayers; l++)
                Assert.True(MaxAbsDiff(NaiveOps.ToFloat(states[l]), tap.Seen[l].Hidden) < 1e-4);
            var doubled = naive.Logits(ids);
            for (int i = 0; i < doubled.GetLength(0); i++)
                for (int j = 0; j < doubled.GetLength(1); j++) doubled[i, j] *= 2; // logits are linear in the final hidden state
            Assert.True(MaxAbsDiff(doubled, logits) < 1e-4);
        }
        Assert.True(MaxAbsDiff(naive.Logits(ids), Logits(model, ids)) < 1e-4);
    }

    // ---------------------------------------------------------------- 1. wrapped layers

    [Fact]
    public void TunableLayersAreTheBaseModelsLinearAndEmbeddingLayers()
    {
        using var model = Load("gpt2");
        var paths = model.Extensions.TunableLayers().Select(l => l.Path).ToList();
        Assert.Equal(2 + 4 * Gpt2.NLayer, paths.Count);
        Assert.Contains("transformer.h.1.mlp.c_proj", paths);
        // A tuner's own module added to a block is not a target.
        model.Blocks[0].AddModule("side", new PeftSharp.Models.Layers.Linear(4, 4, hasBias: false));
        Assert.Contains(model.named_parameters(), p => p.name == "transformer.h.0.side.weight");
        Assert.Equal(2 + 4 * Gpt2.NLayer, model.Extensions.TunableLayers().Count());
        model.Blocks[0].RemoveModule("side");
        Assert.DoesNotContain(model.named_parameters(), p => p.name == "transformer.h.0.side.weight");
    }
}
