using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Quantization.Gptq;
using PeftSharp.Tests.Quantization.Gptq;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.QaLora;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tests.Tuners.QaLora;

/// <summary>
/// QA-LoRA against plain loops: the base is the round-to-nearest group quantization of the checkpoint, the adapter
/// pools its input per group (PEFT's QALoraLinearVariant), and folding it into the zero points gives the same logits
/// to float round-off, in memory and through a written GPTQ folder; integer zero points load and cost a reported error.
/// </summary>
public class QaLoraTests
{
    const int Group = 16, Rank = 4;
    const double Alpha = 8;
    static readonly string[] Targets = ["q_proj", "v_proj", "down_proj"];

    static LoraConfig Config(int bits = 4) => new()
    {
        R = Rank, LoraAlpha = Alpha, UseQalora = true, QaloraGroupSize = Group, QaloraBits = bits,
        TargetModules = TargetModules.FromNames(Targets), InitLoraWeights = InitLoraWeights.False,
    };

    static (CausalLM Model, TinyCheckpoint Ckpt) Tiny(int seed)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, GptqFolderTests.Llama, new TinyLlamaOptions { Seed = seed });
        return (ModelLoader.Load(dir), ckpt);
    }

    /// <summary>GPTQ-style round-to-nearest by loops: q [in, out], scale and zero [groups, out].</summary>
    static (int[,] Q, float[,] Scale, float[,] Zero) NaiveQuantize(float[] w, int outF, int inF, int bits)
    {
        int groups = inF / Group, maxq = (1 << bits) - 1;
        var q = new int[inF, outF];
        var scale = new float[groups, outF];
        var zero = new float[groups, outF];
        for (int o = 0; o < outF; o++)
            for (int g = 0; g < groups; g++)
            {
                float min = 0, max = 0;
                for (int i = g * Group; i < (g + 1) * Group; i++) { min = Math.Min(min, w[o * inF + i]); max = Math.Max(max, w[o * inF + i]); }
                if (min == 0 && max == 0) { min = -1; max = 1; }
                float s = (float)(Half)Math.Max((max - min) / maxq, 1e-4f);
                float z = Math.Clamp(MathF.Round(-min / s, MidpointRounding.ToEven), 0, maxq);
                scale[g, o] = s;
                zero[g, o] = z;
                for (int i = g * Group; i < (g + 1) * Group; i++)
                    q[i, o] = (int)Math.Clamp(MathF.Round(w[o * inF + i] / s, MidpointRounding.ToEven) + z, 0, maxq);
            }
        return (q, scale, zero);
    }

    static float[] Values(Tensor t) => t.detach().to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();

    [Theory]
    [InlineData(4)]
    [InlineData(3)]
    public void BaseIsThePlainLoopRoundToNearestQuantization(int bits)
    {
        var (model, ckpt) = Tiny(11);
        using var _ = model;
        var lora = LoraModel.Create(model, Config(bits), seed: 1);
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module);
        int layers = 0;
        foreach (var key in ckpt.Weights.Keys.Where(k => k.EndsWith("_proj.weight")))
        {
            var shape = ckpt.Shapes[key];
            var (q, scale, zero) = NaiveQuantize(ckpt.Weights[key], shape[0], shape[1], bits);
            var layer = (Linear)modules[key[..^".weight".Length]];
            var w = GptqLayers.Of(layer)!;
            Assert.Equal(NaiveGptq.Flat(q), Values(w.Codes).Select(v => (int)v).ToArray());
            Assert.Equal(scale.Cast<float>().ToArray(), Values(w.Scales));
            Assert.Equal(zero.Cast<float>().ToArray(), Values(w.Zeros));
            var gIdx = Enumerable.Range(0, shape[1]).Select(i => i / Group).ToArray();
            var expected = NaiveGptq.Dequantize(q, scale, zero, gIdx);
            var actual = Values(layer.weight);
            for (int k = 0; k < expected.Length; k++) Assert.Equal(expected[k], actual[k], 6);
            layers++;
        }
        Assert.Equal(7, layers); // every linear layer but lm_head is quantized, adapted or not
        Assert.Equal(Rank, lora.LinearLayers["model.layers.0.self_attn.q_proj"].A("default").weight.shape[0]);
        Assert.Equal(64 / Group, lora.LinearLayers["model.layers.0.self_attn.q_proj"].A("default").weight.shape[1]);
    }

    [Fact]
    public void ForwardPoolsTheInputPerGroupAsAPlainLoop()
    {
        var (model, _) = Tiny(12);
        using var _ = model;
        var lora = LoraModel.Create(model, Config(), seed: 2);
        var layer = lora.LinearLayers["model.layers.0.mlp.down_proj"];
        int inF = 96, outF = 64, groups = inF / Group;
        var w = Values(layer.Host.weight);
        var a = Values(layer.A("default").weight);
        var b = Values(layer.B("default").weight);
        using var gen = new TorchSharp.torch.Generator(3);
        var x = randn([2, 3, inF], generator: gen);
        var y = Values(layer.Host.forward(x));
        var xs = Values(x);
        double scaling = Alpha / Rank;
        for (int row = 0; row < 6; row++)
        {
            var pooled = new double[groups];
            for (int g = 0; g < groups; g++)
            {
                double sum = 0;
                for (int i = g * Group; i < (g + 1) * Group; i++) sum += xs[row * inF + i];
                pooled[g] = sum / Group * groups; // PEFT: mean per group, times the number of groups
            }
            var h = new double[Rank];
            for (int k = 0; k < Rank; k++)
                for (int g = 0; g < groups; g++) h[k] += a[k * groups + g] * pooled[g];
            for (int o = 0; o < outF; o++)
            {
                double expected = 0;
                for (int i = 0; i < inF; i++) expected += w[o * inF + i] * xs[row * inF + i];
                for (int k = 0; k < Rank; k++) expected += scaling * b[o * Rank + k] * h[k];
                Assert.Equal(expected, y[row * outF + o], 4);
            }
        }
    }

    [Fact]
    public void FoldIntoZeroPointsIsExactInMemoryAndThroughAFloatZeroFolder()
    {
        var (model, ckpt) = Tiny(13);
        using var _ = model;
        var lora = LoraModel.Create(model, Config(), seed: 4);
        using var probe = new LogitProbe(model.Config);
        using var unmerged = probe.Logits(model);
        using (var baseOnly = lora.DisableAdapters()) Assert.True(LogitProbe.Difference(probe.Logits(model), unmerged).Max > 1e-3); // the adapter matters

        // Expected zero points by loops: z' = z − s·(B·A)[o, g]·(groups / group) / scale.
        var layer = lora.LinearLayers["model.layers.0.self_attn.v_proj"];
        var before = GptqLayers.Of(layer.Host)!;
        var z = Values(before.Zeros);
        var scale = Values(before.Scales);
        var a = Values(layer.A("default").weight);
        var b = Values(layer.B("default").weight);
        int outF = (int)layer.Host.OutFeatures, groups = 64 / Group;
        var expectedZeros = new double[groups * outF];
        for (int g = 0; g < groups; g++)
            for (int o = 0; o < outF; o++)
            {
                double ba = 0;
                for (int k = 0; k < Rank; k++) ba += b[o * Rank + k] * a[k * groups + g];
                expectedZeros[g * outF + o] = z[g * outF + o] - Alpha / Rank * ba * groups / Group / scale[g * outF + o];
            }
        var host = layer.Host;

        Assert.Equal(3, QaLoraMerge.MergeIntoZeros(lora));
        var merged = Values(GptqLayers.Of(host)!.Zeros);
        for (int k = 0; k < merged.Length; k++) Assert.Equal(expectedZeros[k], merged[k], 4);
        Assert.Contains(merged, v => v != MathF.Round(v)); // fractions: integer qzeros could not hold them
        using var folded = probe.Logits(model);
        Assert.True(LogitProbe.Difference(folded, unmerged).Max < 1e-4);

        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "merged");
        GptqCheckpoint.Save(model, ckpt.Directory, outDir, new GptqConfig { Bits = 4, GroupSize = Group, Sym = false, CheckpointFormat = "gptq_v2", FloatZeros = true });
        var raw = NaiveGptq.Read(Path.Combine(outDir, "model.safetensors"));
        Assert.Equal("F32", raw["model.layers.0.self_attn.v_proj.qzeros"].DType);
        Assert.Equal([groups, outF], raw["model.layers.0.self_attn.v_proj.qzeros"].Shape);
        Assert.Equal("I32", raw["model.layers.0.self_attn.v_proj.qweight"].DType);
        Assert.False(raw.ContainsKey("model.layers.0.self_attn.v_proj.weight"));
        Assert.Contains("\"peftsharp_float_zeros\": true", File.ReadAllText(Path.Combine(outDir, "config.json")));
        using var reloaded = ModelLoader.Load(outDir);
        Assert.True(LogitProbe.Difference(probe.Logits(reloaded), unmerged).Max < 1e-4);
    }

    [Fact]
    public void IntegerZeroPointsWriteAStandardV1FolderAndCostAMeasurableRounding()
    {
        var (model, ckpt) = Tiny(14);
        using var _ = model;
        var lora = LoraModel.Create(model, Config(), seed: 5);
        using var probe = new LogitProbe(model.Config);
        using var unmerged = probe.Logits(model);
        QaLoraMerge.MergeIntoZeros(lora);
        var (rounded, clamped, maxShift) = QaLoraMerge.RoundZeros(model);
        Assert.True(rounded > 0);
        Assert.InRange(maxShift, 1e-6, double.MaxValue);
        Assert.True(clamped >= 0);
        using var roundedLogits = probe.Logits(model);
        var cost = LogitProbe.Difference(roundedLogits, unmerged);
        Assert.True(cost.Max > 1e-5, $"rounding cost {cost.Max}");

        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "v1");
        GptqCheckpoint.Save(model, ckpt.Directory, outDir, new GptqConfig { Bits = 4, GroupSize = Group, Sym = false, CheckpointFormat = "gptq" });
        var raw = NaiveGptq.Read(Path.Combine(outDir, "model.safetensors"));
        Assert.Equal("I32", raw["model.layers.0.self_attn.q_proj.qzeros"].DType);
        Assert.Equal([64 / Group, 64 / 32 * 4], raw["model.layers.0.self_attn.q_proj.qzeros"].Shape);
        using var reloaded = ModelLoader.Load(outDir);
        Assert.True(LogitProbe.Difference(probe.Logits(reloaded), roundedLogits).Max < 1e-5);
    }

    [Fact]
    public void ActOrderBaseAndFullPrecisionMergesAreRefusedInOneLine()
    {
        var f = GptqFolderTests.Write(4, v2: true, sym: false, actOrder: true, groupSize: Group, seed: 21);
        using (var model = ModelLoader.Load(f.Dir))
        {
            var lora = LoraModel.Create(model, Config(), seed: 6);
            var e = Assert.Throws<PeftSharpException>(() => QaLoraMerge.MergeIntoZeros(lora));
            Assert.Contains("act-order", e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        var (plain, ckpt) = Tiny(16);
        using var _ = plain;
        var l2 = LoraModel.Create(plain, Config(), seed: 7);
        l2.MergeAndUnload(); // full-precision merge: the weights leave the quantization grid
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "stale");
        var e2 = Assert.Throws<PeftSharpException>(() => GptqCheckpoint.Save(plain, ckpt.Directory, outDir, new GptqConfig { Bits = 4, GroupSize = Group, Sym = false }));
        Assert.Contains("no longer equals its GPTQ quantization", e2.Message);
    }

    [Fact]
    public void GroupSizeNotDividingInFeaturesAndUnsupportedBitsAreOneLineErrors()
    {
        var (model, _) = Tiny(15);
        using var _ = model;
        var bad = Config();
        bad.QaloraGroupSize = 24; // divides 96 but not 64
        var e = Assert.Throws<PeftSharpException>(() => LoraModel.Create(model, bad));
        Assert.Contains("qalora_group_size (--group-size) 24 does not divide in_features 64", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        var e2 = Assert.Throws<PeftSharpException>(() => LoraModel.Create(model, Config(bits: 5)));
        Assert.Contains("5 bits is not supported", e2.Message);
    }
}
