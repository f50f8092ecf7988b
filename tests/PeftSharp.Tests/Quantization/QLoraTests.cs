using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Quantization;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.Lora;
using TorchSharp;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Quantization.QuantTestKit;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// Models loaded in 4 bits against the plain-loop reference models run on weights the plain-loop quantizer rounded:
/// outputs, what the layers hold, gradients (only LoRA's, and equal to those of the same adapter on the rounded
/// full-precision model), DoRA, merging and PEFT's parameter count.
/// </summary>
public class QLoraTests
{
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 50, NEmbd = 32, NLayer = 2, NHead = 2, NPositions = 24 };
    static readonly NaiveLlamaConfig Llama = new()
    {
        ModelType = "llama", VocabSize = 48, HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2,
        NumAttentionHeads = 4, NumKeyValueHeads = 2, MlpBias = true,
    };

    static (string Dir, TinyCheckpoint Ckpt) Write(bool gpt2, int seed)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = gpt2 ? TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = seed })
                        : TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = seed });
        return (dir, ckpt);
    }

    static float[,] ReferenceLogits(bool gpt2, IReadOnlyDictionary<string, float[]> weights, int[] ids) =>
        gpt2 ? new NaiveGpt2(Gpt2, weights).Logits(ids) : new NaiveLlama(Llama, weights).Logits(ids);

    static BitsAndBytesConfig Bnb(bool fp4 = false, bool dq = false, ScalarType compute = ScalarType.Float32) =>
        new() { QuantType = fp4 ? FourBitType.Fp4 : FourBitType.Nf4, DoubleQuant = dq, ComputeDType = compute };

    [Theory]
    [InlineData(true, false)]
    [InlineData(true, true)]
    [InlineData(false, false)]
    [InlineData(false, true)]
    public void LoadIn4BitComputesTheReferenceOnRoundTrippedWeights(bool gpt2, bool fp4)
    {
        var (dir, ckpt) = Write(gpt2, seed: 5);
        using var model = ModelLoader.Load(dir, ScalarType.Float32, null, Bnb(fp4));
        var ids = RandomIds(12, gpt2 ? Gpt2.VocabSize : Llama.VocabSize, 3);
        var want = ReferenceLogits(gpt2, RoundTripped(ckpt, gpt2, fp4), ids);
        Assert.True(MaxAbsDiff(want, ReferenceLogits(gpt2, ckpt.Weights, ids)) > 1e-3); // quantization really changes the output
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void QuantizedLayersHoldOnlyPackedCodesAndOthersStayFullPrecision(bool gpt2)
    {
        var (dir, ckpt) = Write(gpt2, seed: 6);
        using var model = ModelLoader.Load(dir, ScalarType.Float32, null, Bnb());
        Assert.Equal(ModelLoader.Load(dir).Device.type, model.Device.type);
        var quantized = QuantizedModels.Quantized(model).ToList();
        Assert.Equal(gpt2 ? 4 * Gpt2.NLayer : 7 * Llama.NumHiddenLayers, quantized.Count);
        Assert.DoesNotContain(quantized, q => q.Path.Contains("lm_head"));
        foreach (var (path, layer) in quantized)
        {
            string key = gpt2 ? path : path; // GPT-2 keys carry the "transformer." prefix like the model
            var shape = ckpt.Shapes[key + ".weight"];
            var (w, outDim, inDim) = OutIn(ckpt.Weights[key + ".weight"], shape, gpt2);
            // The parameter "weight" is the packed uint8 codes [(n+1)/2, 1], exactly the plain-loop quantizer's bytes.
            Assert.Equal(ScalarType.Byte, layer.weight.dtype);
            Assert.Equal(new long[] { (w.Length + 1) / 2, 1 }, layer.weight.shape);
            Assert.False(layer.weight.requires_grad);
            Assert.Equal(NaiveFourBit.Quantize(w, false, 64).Packed, layer.weight.data<byte>().ToArray());
            Assert.Equal(new long[] { outDim, inDim }, layer.QuantState!.Shape);
        }
        // No full-precision copy of a quantized matrix anywhere: the only float parameters are the others.
        foreach (var (name, p) in model.named_parameters())
            if (p.dtype != ScalarType.Byte) Assert.False(quantized.Any(q => name == q.Path + ".weight"), name);
        if (!gpt2) Assert.Equal(ScalarType.Float32, ((LlamaForCausalLM)model).lm_head!.weight.dtype);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void QLoraGradientsReachOnlyLoraWeightsAndEqualThoseOnTheRoundTrippedModel(bool gpt2)
    {
        var (dir, ckpt) = Write(gpt2, seed: 7);
        var roundDir = TinyCheckpoints.NewTempDirectory();
        if (gpt2) TinyCheckpoints.WriteGpt2(roundDir, Gpt2, RoundTripped(ckpt, gpt2));
        else TinyCheckpoints.WriteLlama(roundDir, Llama, RoundTripped(ckpt, gpt2));
        var ids = RandomIds(10, gpt2 ? Gpt2.VocabSize : Llama.VocabSize, 4);

        Dictionary<string, float[]> Gradients(CausalLM model, out LoraModel lora)
        {
            var config = new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.AllLinear, InitLoraWeights = InitLoraWeights.False, Bias = "lora_only" };
            lora = LoraModel.Create(model, config, seed: 11);
            model.train();
            using var input = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
            using var logits = model.Forward(input);
            using var loss = logits.log_softmax(-1).select(1, 0).mean();
            loss.backward();
            return model.named_parameters().Where(p => p.parameter.grad is not null)
                .ToDictionary(p => p.name, p => p.parameter.grad!.to_type(ScalarType.Float32).data<float>().ToArray());
        }

        using var quantized = ModelLoader.Load(dir, ScalarType.Float32, null, Bnb());
        var grads = Gradients(quantized, out var qlora);
        using var reference = ModelLoader.Load(roundDir);
        var want = Gradients(reference, out _);

        // Exactly the trainable parameters got gradients: LoRA factors and the biases of adapted layers (bias "lora_only").
        var trainable = qlora.TrainableParameters().Select(p => p.Name).ToHashSet();
        Assert.Equal(trainable.OrderBy(n => n), grads.Keys.OrderBy(n => n));
        Assert.All(trainable, n => Assert.True(n.Contains("lora_") || n.EndsWith(".bias"), n));
        Assert.DoesNotContain(grads.Keys, n => QuantizedModels.Quantized(quantized).Any(q => n == q.Path + ".weight"));
        // Gradients reach the first layer's adapters through the 4-bit layers above them.
        string first = gpt2 ? "transformer.h.0.attn.c_attn.lora_A.default.weight" : "model.layers.0.self_attn.q_proj.lora_A.default.weight";
        Assert.Contains(grads[first], g => g != 0);
        Assert.Equal(want.Keys.OrderBy(n => n), grads.Keys.OrderBy(n => n));
        foreach (var (name, g) in grads)
        {
            double scale = want[name].Max(v => Math.Abs(v)) + 1e-8;
            Assert.True(g.Zip(want[name]).All(p => Math.Abs(p.First - p.Second) <= 1e-4 * scale + 1e-7), name);
        }
    }

    [Fact]
    public void BFloat16ComputeKeepsTheInputDTypeAndStaysClose()
    {
        var (dir, ckpt) = Write(false, seed: 8);
        using var model = ModelLoader.Load(dir, ScalarType.Float32, null, Bnb(compute: ScalarType.BFloat16));
        Assert.All(QuantizedModels.Quantized(model), q => Assert.Equal(ScalarType.BFloat16, q.Layer.ComputeDType));
        var ids = RandomIds(12, Llama.VocabSize, 3);
        var want = ReferenceLogits(false, RoundTripped(ckpt, false), ids);
        var got = Logits(model, ids);
        double diff = MaxAbsDiff(want, got);
        Assert.True(diff is > 0 and < 0.1, $"bf16 compute differs by {diff}");
    }

    [Fact]
    public void ParameterReportCountsFourBitWeightsAsPeftDoes()
    {
        var (dir, _) = Write(false, seed: 9);
        var config = new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.AllLinear };
        using var plain = ModelLoader.Load(dir);
        using var quantized = ModelLoader.Load(dir, ScalarType.Float32, null, Bnb(dq: true));
        var want = LoraModel.Create(plain, config, seed: 1).CountParameters();
        var got = LoraModel.Create(quantized, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.AllLinear }, seed: 1).CountParameters();
        Assert.Equal(want, got);
        // ...although the model holds far fewer elements.
        Assert.True(quantized.parameters().Sum(p => p.numel()) < plain.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void DoraOnAFourBitBaseEqualsDoraOnTheRoundTrippedModel()
    {
        var (dir, ckpt) = Write(false, seed: 10);
        var roundDir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(roundDir, Llama, RoundTripped(ckpt, false));
        LoraConfig Dora() => new() { R = 4, LoraAlpha = 8, TargetModules = TargetModules.FromNames("q_proj", "down_proj"), UseDora = true, InitLoraWeights = InitLoraWeights.False };
        using var quantized = ModelLoader.Load(dir, ScalarType.Float32, null, Bnb());
        using var reference = ModelLoader.Load(roundDir);
        LoraModel.Create(quantized, Dora(), seed: 2);
        LoraModel.Create(reference, Dora(), seed: 2);
        var ids = RandomIds(9, Llama.VocabSize, 5);
        Assert.True(MaxAbsDiff(Logits(reference, ids), Logits(quantized, ids)) < 1e-4);
    }

    [Fact]
    public void MergingIntoAFourBitBaseRequantizesWithinTheRoundingBound()
    {
        var (dir, _) = Write(false, seed: 12);
        using var model = ModelLoader.Load(dir, ScalarType.Float32, null, Bnb());
        var lora = LoraModel.Create(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.FromNames("up_proj"), InitLoraWeights = InitLoraWeights.False }, seed: 3);
        var layer = lora.LinearLayers["model.layers.0.mlp.up_proj"];
        float[] Values(Tensor t) => t.detach().to_type(ScalarType.Float32).contiguous().data<float>().ToArray();
        var before = Values(layer.Host.WeightOutIn);
        var a = Values(layer.A("default").weight);
        var b = Values(layer.B("default").weight);
        var delta = Tuners.LoraTestKit.Delta(a, b, 4, Llama.HiddenSize, Llama.IntermediateSize, 2.0);
        lora.Merge();
        Assert.True(layer.Host.IsQuantized); // still 4-bit: W + ΔW was re-quantized
        var merged = Values(layer.Host.WeightOutIn);
        var absmax = Values(layer.Host.QuantState!.BlockAbsmax(CPU));
        double halfGap = NaiveFourBit.LargestGap(NaiveFourBit.Nf4) / 2;
        for (int i = 0; i < merged.Length; i++)
        {
            double exact = before[i] + delta[i / Llama.HiddenSize, i % Llama.HiddenSize];
            Assert.True(Math.Abs(merged[i] - exact) <= halfGap * absmax[i / 64] * (1 + 1e-5) + 1e-6, $"element {i}");
        }
    }

    [Fact]
    public void DequantizingGivesTheLayerItsRoundTrippedWeightInItsLayout()
    {
        var (dir, ckpt) = Write(true, seed: 13);
        using var model = ModelLoader.Load(dir, ScalarType.Float32, null, Bnb());
        Assert.Equal(8, QuantizedModels.Dequantize(model));
        Assert.False(QuantizedModels.IsQuantized(model));
        var want = RoundTripped(ckpt, true);
        foreach (var (name, p) in model.named_parameters())
            Assert.Equal(want[name], p.data<float>().ToArray());
    }
}
