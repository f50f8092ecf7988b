using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.UniPelt;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.UniPelt;

/// <summary>
/// UniPELT against a plain-loop reference: the naive GPT-2 / Llama with the gated LoRA, gated prefix and gated adapter
/// written row by row into <see cref="NaiveHooks"/> from the adapter's own numbers; gates forced to ~1 / ~0; gradients;
/// a folder written by hand; one-line errors.
/// </summary>
public class UniPeltTests
{
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 53, NEmbd = 24, NLayer = 2, NHead = 3, NPositions = 48 };
    static readonly NaiveLlamaConfig Llama = new() { VocabSize = 47, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2 };

    internal sealed record Loaded(CausalLM Model, string Dir, string Family, IReadOnlyDictionary<string, float[]> Weights, Func<NaiveHooks, Func<int[], float[,]>> Naive) : IDisposable
    {
        public void Dispose() => Model.Dispose();
        public int Vocab => Family == "gpt2" ? Gpt2.VocabSize : Llama.VocabSize;
        public int Hidden => Family == "gpt2" ? Gpt2.NEmbd : Llama.HiddenSize;
        public string NaivePath(string path) => Family == "gpt2" && path.StartsWith("transformer.", StringComparison.Ordinal) ? path["transformer.".Length..] : path;
    }

    internal static Loaded Load(string family)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        if (family == "gpt2")
        {
            var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 51 });
            return new(ModelLoader.Load(dir), dir, family, ckpt.Weights, h => new NaiveGpt2(Gpt2, ckpt.Weights) { Hooks = h }.Logits);
        }
        var l = TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 52 });
        return new(ModelLoader.Load(dir), dir, family, l.Weights, h => new NaiveLlama(Llama, l.Weights) { Hooks = h }.Logits);
    }

    static float[] V(Tensor t) => t.detach().to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
    static double Sig(double z) => 1 / (1 + Math.Exp(-z));

    /// <summary>Random values in every projection (B and up start at zero), so every part changes the output.</summary>
    static void Randomize(UniPeltModel u, int seed)
    {
        using var _ = no_grad();
        var gen = new Random(seed);
        foreach (var (_, p) in u.NamedParameters())
        {
            var values = Enumerable.Range(0, (int)p.numel()).Select(_ => (float)(gen.NextDouble() * 0.6 - 0.3)).ToArray();
            p.copy_(tensor(values).view(p.shape));
        }
    }

    /// <summary>Sets every gate of one kind ("lora", "adapter", "prefix") to weight 0 and bias <paramref name="bias"/>.</summary>
    static void ForceGates(UniPeltModel u, string kind, double bias)
    {
        using var _ = no_grad();
        foreach (var (n, p) in u.NamedParameters().Where(p => p.Name.Contains($"unipelt_{kind}_gate.", StringComparison.Ordinal)))
        {
            if (n.EndsWith(".weight", StringComparison.Ordinal)) p.zero_();
            else p.fill_(bias);
        }
    }

    /// <summary>
    /// The reference hooks for the adapter's current numbers: gated rows as the paper writes them. <paramref name="gated"/>
    /// false drops the gates (each part at full strength).
    /// </summary>
    internal static NaiveHooks Hooks(Loaded m, UniPeltModel u, int firstToken, bool gated = true)
    {
        var c = u.Config!;
        var p = u.NamedParameters().ToDictionary(x => x.Name, x => V(x.Param));
        int layers = c.NumLayers!.Value, kv = c.TokenDim!.Value, P = c.NumVirtualTokens, H = m.Hidden;
        var loraPaths = u.LoraLayers.ToDictionary(m.NaivePath, x => x);
        var adapterPaths = u.AdapterLayers.ToDictionary(m.NaivePath, x => x);
        var lastIn = new Dictionary<string, double[]>();
        var first = new Dictionary<int, double[]>();
        // Block 0's input at position 0: the token embedding (GPT-2 adds wpe at position P, after the prefix).
        var emb = m.Family == "gpt2"
            ? NaiveOps.Add(NaiveOps.Row(m.Weights["transformer.wte.weight"].ToArray(), firstToken, H), NaiveOps.Row(m.Weights["transformer.wpe.weight"].ToArray(), P, H))
            : NaiveOps.Row(m.Weights["model.embed_tokens.weight"].ToArray(), firstToken, H);
        first[0] = emb;
        var blockPath = m.Family == "gpt2" ? "transformer.h." : "model.layers.";
        double Gate(string prefix, double[] x) => gated ? Sig(NaiveOps.Dot(x, p[prefix + ".weight"].Select(f => (double)f).ToArray()) + p[prefix + ".bias"][0]) : 1.0;
        double[] Scale(double[] v, double s) => v.Select(e => e * s).ToArray();
        var table = p.Single(x => x.Key.StartsWith("unipelt_prefix.", StringComparison.Ordinal)).Value;
        int width = layers * 2 * kv;
        return new NaiveHooks
        {
            LinearInput = (path, x) => { lastIn[path] = x; return x; },
            LinearOutput = (path, y) =>
            {
                if (loraPaths.TryGetValue(path, out var full))
                {
                    var x = lastIn[path];
                    var a = p[full + ".unipelt_lora_A.weight"];
                    var b = p[full + ".unipelt_lora_B.weight"];
                    int r = c.R, inDim = x.Length, outDim = y.Length;
                    var delta = NaiveOps.Linear(NaiveOps.Linear(x, a, null, inDim, r), b, null, r, outDim);
                    y = NaiveOps.Add(y, Scale(delta, c.Scaling * Gate(full + ".unipelt_lora_gate", x)));
                }
                if (adapterPaths.TryGetValue(path, out var ad))
                {
                    int d = c.BottleneckSize, o = y.Length;
                    var hidden = NaiveOps.Linear(y, p[ad + ".unipelt_adapter_down.weight"], null, o, d).Select(Math.Tanh).ToArray();
                    var up = NaiveOps.Linear(hidden, p[ad + ".unipelt_adapter_up.weight"], null, d, o);
                    y = NaiveOps.Add(y, Scale(up, Gate(ad + ".unipelt_adapter_gate", y)));
                }
                return y;
            },
            SubLayer = (layer, kind, residual, input, output) =>
            {
                if (kind == "mlp" && !first.ContainsKey(layer + 1)) first[layer + 1] = NaiveOps.Add(residual, output);
                return output;
            },
            Prefix = layer =>
            {
                double g = Gate($"{blockPath}{layer}.unipelt_prefix_gate", first[layer]);
                var keys = new double[P][];
                var values = new double[P][];
                for (int i = 0; i < P; i++)
                {
                    keys[i] = Enumerable.Range(0, kv).Select(j => (double)table[i * width + 2 * layer * kv + j]).ToArray();
                    values[i] = Enumerable.Range(0, kv).Select(j => g * table[i * width + (2 * layer + 1) * kv + j]).ToArray();
                }
                return (keys, values);
            },
        };
    }

    static float[][,] BatchLogits(CausalLM model, int[][] batch)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var input = stack(batch.Select(ids => tensor(ids.Select(i => (long)i).ToArray())).ToArray());
        var logits = model.Forward(input).to_type(ScalarType.Float32).cpu();
        return Enumerable.Range(0, batch.Length).Select(b => ToArray(logits[b])).ToArray();
    }

    static UniPeltConfig SmallConfig() => new() { R = 3, LoraAlpha = 6, NumVirtualTokens = 4, BottleneckSize = 5 };

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void ForwardMatchesGatedReferencePerExample(string family)
    {
        using var m = Load(family);
        var u = UniPeltModel.Create(m.Model, SmallConfig(), seed: 7);
        Randomize(u, 8);
        // Two sequences in one batch: each gets its own prefix gate.
        int[][] batch = [RandomIds(7, m.Vocab, 1), RandomIds(7, m.Vocab, 2)];
        var ours = BatchLogits(m.Model, batch);
        for (int b = 0; b < batch.Length; b++)
        {
            var expected = m.Naive(Hooks(m, u, batch[b][0]))(batch[b]);
            Assert.True(MaxAbsDiff(expected, ours[b]) < 1e-4, $"sequence {b}: {MaxAbsDiff(expected, ours[b])}");
        }
        var g0 = V(u.PrefixGate(1)!);
        Assert.Equal(2, g0.Length);
        Assert.NotEqual(g0[0], g0[1]);
        using (u.DisableAdapters())
            Assert.True(MaxAbsDiff(m.Naive(new NaiveHooks())(batch[0]), BatchLogits(m.Model, [batch[0]])[0]) < 1e-4);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void GatesNearOneOrZeroReduceToTheParts(string family)
    {
        using var m = Load(family);
        var u = UniPeltModel.Create(m.Model, SmallConfig(), seed: 9);
        Randomize(u, 10);
        var ids = RandomIds(6, m.Vocab, 3);
        // All gates ~1: plain LoRA + plain prefix + plain adapter (reference without gates).
        foreach (var kind in new[] { "lora", "adapter", "prefix" }) ForceGates(u, kind, 40);
        Assert.True(MaxAbsDiff(m.Naive(Hooks(m, u, ids[0], gated: false))(ids), Logits(m.Model, ids)) < 1e-4);
        // All gates ~0: the prefix keys stay but carry zero values; the output is the base model with P zero-value keys.
        foreach (var kind in new[] { "lora", "adapter", "prefix" }) ForceGates(u, kind, -40);
        var zeroValues = Hooks(m, u, ids[0]);
        var expected = m.Naive(new NaiveHooks { SubLayer = zeroValues.SubLayer, Prefix = l => { var (k, v) = zeroValues.Prefix!(l); return (k, v.Select(r => new double[r.Length]).ToArray()); } })(ids);
        Assert.True(MaxAbsDiff(expected, Logits(m.Model, ids)) < 1e-4);
        // Only LoRA open: the base model plus plain LoRA, and zero-value prefixes.
        ForceGates(u, "lora", 40);
        var onlyLora = Hooks(m, u, ids[0], gated: false);
        var expectedLora = m.Naive(new NaiveHooks
        {
            LinearInput = onlyLora.LinearInput,
            SubLayer = onlyLora.SubLayer,
            LinearOutput = (path, y) => u.AdapterLayers.Select(m.NaivePath).Contains(path) ? y : onlyLora.LinearOutput!(path, y),
            Prefix = l => { var (k, v) = onlyLora.Prefix!(l); return (k, v.Select(r => new double[r.Length]).ToArray()); },
        })(ids);
        Assert.True(MaxAbsDiff(expectedLora, Logits(m.Model, ids)) < 1e-4);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void CachedDecodingEqualsFullForwards(string family)
    {
        using var m = Load(family);
        var u = UniPeltModel.Create(m.Model, SmallConfig(), seed: 21);
        Randomize(u, 22);
        var ids = RandomIds(9, m.Vocab, 23).ToList();
        using var _ = no_grad();
        using var cache = m.Model.NewCache();
        for (int n = 5; n <= ids.Count; n++)
        {
            using var scope = NewDisposeScope();
            var input = n == 5 ? tensor(ids.Take(5).Select(i => (long)i).ToArray()).unsqueeze(0) : tensor(new long[] { ids[n - 1] }).unsqueeze(0);
            var cached = ToArray(m.Model.Forward(input, cache)[0, TensorIndex.Slice(-1)].to_type(ScalarType.Float32));
            var full = Logits(m.Model, ids.Take(n).ToArray());
            var last = new float[1, full.GetLength(1)];
            for (int j = 0; j < full.GetLength(1); j++) last[0, j] = full[n - 1, j];
            Assert.True(MaxAbsDiff(last, cached) < 1e-4, $"step {n}");
        }
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void ExportWithConstantGatesFoldedLoadsAsOrdinaryAdaptersWithTheSameLogits(string family)
    {
        using var m = Load(family);
        using var tmp = new TempDir();
        var u = UniPeltModel.Create(m.Model, SmallConfig(), seed: 31);
        Randomize(u, 32);
        // Zero gate weights make every gate the constant σ(bias): the export is then exact.
        ForceGates(u, "lora", 0.4);
        ForceGates(u, "adapter", -0.7);
        ForceGates(u, "prefix", 1.3);
        var ids = RandomIds(6, m.Vocab, 33);
        var means = u.MeasureGates(() => Logits(m.Model, ids));
        Assert.All(means.Lora.Values, g => Assert.Equal(Sig(0.4), g, 6));
        Assert.All(means.Adapter.Values, g => Assert.Equal(Sig(-0.7), g, 6));
        Assert.All(means.Prefix, g => Assert.Equal(Sig(1.3), g, 6));
        var want = Logits(m.Model, ids);
        var folders = UniPeltExport.Write(u, tmp.Path, means);
        Assert.Equal(["LORA", "PREFIX_TUNING", "BOTTLENECK"], folders.Select(f => PeftConfig.ReadPeftType(f)!).ToArray());
        u.Unload();
        var peft = PeftModel.Load(m.Model, folders, ["lora", "prefix", "bn"]);
        peft.SetAdapter("lora", "prefix", "bn");
        Assert.True(MaxAbsDiff(want, Logits(m.Model, ids)) < 1e-4);
    }

    [Fact]
    public void GradientsReachEveryGate()
    {
        using var m = Load("gpt2");
        var peft = new PeftModel(m.Model);
        peft.AddAdapter("default", SmallConfig(), seed: 11);
        peft.SetAdapter("default");
        var u = peft.Get<UniPeltModel>()!;
        Randomize(u, 12);
        var trainable = peft.TrainableParameters().Select(p => p.Name).ToHashSet();
        Assert.Equal(u.NamedParameters().Select(p => p.Name).ToHashSet(), trainable);
        using var scope = NewDisposeScope();
        var ids = tensor(RandomIds(8, m.Vocab, 5).Select(i => (long)i).ToArray()).view(2, 4);
        var logits = m.Model.Forward(ids);
        logits.square().mean().backward();
        foreach (var (n, p) in u.NamedParameters().Where(p => p.Name.Contains("_gate.", StringComparison.Ordinal)))
        {
            Assert.NotNull(p.grad);
            Assert.True(p.grad!.abs().sum().item<float>() > 0, $"{n} got no gradient");
        }
        Assert.Equal(12, u.NamedParameters().Count(p => p.Name.Contains("_gate.", StringComparison.Ordinal)));
    }

    [Fact]
    public void HandWrittenFolderLoadsAndSavesBack()
    {
        using var m = Load("gpt2");
        using var tmp = new TempDir();
        string dir = Path.Combine(tmp.Path, "unipelt");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"),
            """{"peft_type": "UNIPELT", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4.0, "num_virtual_tokens": 3, "bottleneck_size": 4}""");
        int e = Gpt2.NEmbd, L = Gpt2.NLayer;
        var rng = new Random(13);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var tensors = new List<NaiveTensor> { new("base_model.model.unipelt_prefix.weight", NaiveDType.F32, [3, L * 2 * e], R(3 * L * 2 * e)) };
        for (int l = 0; l < L; l++)
        {
            string a = $"base_model.model.transformer.h.{l}.attn.c_attn.", mo = $"base_model.model.transformer.h.{l}.mlp.c_proj.", b = $"base_model.model.transformer.h.{l}.";
            tensors.Add(new(a + "unipelt_lora_A.weight", NaiveDType.F32, [2, e], R(2 * e)));
            tensors.Add(new(a + "unipelt_lora_B.weight", NaiveDType.F32, [3 * e, 2], R(3 * e * 2)));
            tensors.Add(new(a + "unipelt_lora_gate.weight", NaiveDType.F32, [1, e], R(e)));
            tensors.Add(new(a + "unipelt_lora_gate.bias", NaiveDType.F32, [1], R(1)));
            tensors.Add(new(mo + "unipelt_adapter_down.weight", NaiveDType.F32, [4, e], R(4 * e)));
            tensors.Add(new(mo + "unipelt_adapter_up.weight", NaiveDType.F32, [e, 4], R(4 * e)));
            tensors.Add(new(mo + "unipelt_adapter_gate.weight", NaiveDType.F32, [1, e], R(e)));
            tensors.Add(new(mo + "unipelt_adapter_gate.bias", NaiveDType.F32, [1], R(1)));
            tensors.Add(new(b + "unipelt_prefix_gate.weight", NaiveDType.F32, [1, e], R(e)));
            tensors.Add(new(b + "unipelt_prefix_gate.bias", NaiveDType.F32, [1], R(1)));
        }
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);

        var peft = PeftModel.Load(m.Model, [dir]);
        var u = peft.Get<UniPeltModel>()!;
        // The loaded numbers are the file's, and the forward is the reference's.
        var byName = u.NamedParameters().ToDictionary(p => UniPeltFiles.KeyOf(p.Name, "default"), p => V(p.Param));
        foreach (var t in tensors) Assert.Equal(t.Values, byName[t.Name]);
        var ids = RandomIds(5, m.Vocab, 6);
        Assert.True(MaxAbsDiff(m.Naive(Hooks(m, u, ids[0]))(ids), Logits(m.Model, ids)) < 1e-4);

        string saved = Path.Combine(tmp.Path, "saved");
        peft.Save(saved);
        var back = NaiveSafetensors.Read(Path.Combine(saved, "adapter_model.safetensors"));
        Assert.Equal(tensors.Select(t => t.Name).Order(StringComparer.Ordinal), back.Keys.Order(StringComparer.Ordinal));
        foreach (var t in tensors) Assert.Equal(t.Values, back[t.Name].Values);
        var config = UniPeltConfig.Load(saved);
        Assert.Equal((2, 4.0, 3, 4, 2, e, 3), (config.R, config.LoraAlpha, config.NumVirtualTokens, config.BottleneckSize, config.NumLayers!.Value, config.TokenDim!.Value, config.NumAttentionHeads!.Value));
    }

    [Theory]
    [InlineData("\"num_virtual_tokens\": 0", "field 'num_virtual_tokens' is 0")]
    [InlineData("\"r\": -1", "field 'r' is -1")]
    [InlineData("\"non_linearity\": \"gelu\"", "field 'non_linearity' is \"gelu\"")]
    [InlineData("\"num_layers\": 5", "field 'num_layers' is 5 but this gpt2 model has 2 layers")]
    public void BadConfigIsOneLineError(string field, string expected)
    {
        using var m = Load("gpt2");
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("adapter_config.json"), $$"""{"peft_type": "UNIPELT", {{field}}}""");
        NaiveSafetensors.Write(tmp.File("adapter_model.safetensors"), [new("x", NaiveDType.F32, [1], [0f])]);
        var ex = Assert.Throws<PeftSharpException>(() => PeftModel.Load(m.Model, [tmp.Path]));
        Assert.Contains(expected, ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void MisshapenTensorIsOneLineErrorAndLeavesNoAdapter()
    {
        using var m = Load("gpt2");
        using var tmp = new TempDir();
        var u = UniPeltModel.Create(m.Model, SmallConfig(), seed: 1);
        u.SaveAdapter(tmp.Path, "default");
        u.Unload();
        var dict = NaiveSafetensors.Read(tmp.File("adapter_model.safetensors"));
        var bad = dict.Values.Select(t => t.Name == "base_model.model.unipelt_prefix.weight" ? t with { Shape = [2, t.Values.Length / 2] } : t).ToList();
        NaiveSafetensors.Write(tmp.File("adapter_model.safetensors"), bad);
        var ex = Assert.Throws<PeftSharpException>(() => PeftModel.Load(m.Model, [tmp.Path]));
        Assert.Contains("tensor 'base_model.model.unipelt_prefix.weight' has shape [2,", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        Assert.DoesNotContain(m.Model.named_parameters(), p => p.name.Contains("unipelt", StringComparison.Ordinal));
    }
}
