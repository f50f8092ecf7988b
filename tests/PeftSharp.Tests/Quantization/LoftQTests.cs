using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Quantization;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// LoftQ: the error ‖W − (dequant(Q) + s·B·A)‖_F, recomputed here by loops from the stored codes and factors, is
/// below QLoRA's start ‖W − dequant(quant(W))‖_F and does not grow with more iterations; as init_lora_weights it
/// leaves the base on the NF4 grid.
/// </summary>
public class LoftQTests
{
    static float[] F(Tensor t) => t.detach().to_type(ScalarType.Float32).contiguous().data<float>().ToArray();

    /// <summary>A weight with a decaying spectrum plus noise (as trained weights have), [rows, cols].</summary>
    static Tensor StructuredWeight(int rows, int cols, int seed)
    {
        using var gen = new Generator((ulong)seed);
        var noise = randn([rows, cols], generator: gen).mul(0.02);
        var u = randn([rows, 32], generator: gen);
        var v = randn([32, cols], generator: gen);
        var decay = tensor(Enumerable.Range(1, 32).Select(i => (float)(0.01 / i)).ToArray()).unsqueeze(1);
        return noise.add(u.matmul(decay.mul(v)).div(Math.Sqrt(cols)));
    }

    static double LoopError(float[] w, float[] deq, float[] a, float[] b, int rows, int cols, int r, double s)
    {
        double sum = 0;
        for (int o = 0; o < rows; o++)
            for (int i = 0; i < cols; i++)
            {
                double ba = 0;
                for (int k = 0; k < r; k++) ba += (double)b[o * r + k] * a[k * cols + i];
                double d = w[o * cols + i] - (deq[o * cols + i] + s * ba);
                sum += d * d;
            }
        return Math.Sqrt(sum);
    }

    [Fact]
    public void LoftQStartsCloserToTheWeightThanQLoraAndMoreIterationsDoNotHurt()
    {
        const int rows = 192, cols = 256, rank = 8;
        const double scaling = 2.0;
        using var w = StructuredWeight(rows, cols, 1);
        var wv = F(w);
        var start = NaiveFourBit.Quantize(wv, false, 64);
        double qlora = Math.Sqrt(wv.Zip(NaiveFourBit.Dequantize(start.Packed, start.Absmax, NaiveFourBit.Nf4, 64, wv.Length)).Sum(p => Math.Pow(p.First - p.Second, 2)));
        Assert.Equal(qlora, LoftQ.QLoraStartError(w), 1e-4 * qlora);

        using var one = LoftQ.Initialize(w, rank, scaling, iterations: 1);
        using var five = LoftQ.Initialize(w, rank, scaling, iterations: 5);
        // One iteration quantizes W itself: Q is exactly QLoRA's quantization.
        Assert.Equal(start.Packed, one.Quantized.Packed.data<byte>().ToArray());
        Assert.Equal(new long[] { rank, cols }, one.A.shape);
        Assert.Equal(new long[] { rows, rank }, one.B.shape);
        foreach (var result in new[] { one, five })
        {
            var deq = NaiveFourBit.Dequantize(result.Quantized.Packed.data<byte>().ToArray(), F(result.Quantized.State.Absmax), NaiveFourBit.Nf4, 64, wv.Length);
            double error = LoopError(wv, deq, F(result.A), F(result.B), rows, cols, rank, scaling);
            Assert.Equal(error, result.Errors[^1], 1e-3 * error);
        }
        Assert.True(one.Errors[0] < 0.97 * qlora, $"LoftQ(1) {one.Errors[0]} vs QLoRA {qlora}");
        Assert.True(five.Errors[^1] <= one.Errors[0] * (1 + 1e-4), $"LoftQ(5) {five.Errors[^1]} vs LoftQ(1) {one.Errors[0]}");
        Assert.Equal(5, five.Errors.Count);
    }

    [Fact]
    public void LoftQInitLeavesTheBaseOnTheNf4GridAndCloserToTheOriginal()
    {
        var llama = new NaiveLlamaConfig { ModelType = "llama", VocabSize = 40, HiddenSize = 64, IntermediateSize = 96, NumHiddenLayers = 1, NumAttentionHeads = 4, NumKeyValueHeads = 2 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, llama, new TinyLlamaOptions { Seed = 3, InitStd = 0.05 });
        using var model = ModelLoader.Load(dir);
        var config = new LoraConfig
        {
            R = 4, LoraAlpha = 8, TargetModules = TargetModules.FromNames("q_proj", "up_proj"),
            InitLoraWeights = InitLoraWeights.Loftq, LoftqConfig = new JsonObject { ["loftq_bits"] = 4, ["loftq_iter"] = 2 },
        };
        var lora = LoraModel.Create(model, config, seed: 1);
        Assert.Equal(2, lora.LinearLayers.Count);
        foreach (var (path, layer) in lora.LinearLayers)
        {
            var original = ckpt.Weights[path + ".weight"];
            var host = F(layer.Host.weight);
            // Re-quantizing the new base gives it back: it is dequant(Q).
            var q = NaiveFourBit.Quantize(host, false, 64);
            Assert.Equal(host, NaiveFourBit.Dequantize(q.Packed, q.Absmax, NaiveFourBit.Nf4, 64, host.Length));
            int rows = (int)layer.Host.OutFeatures, cols = (int)layer.Host.InFeatures;
            double loftq = LoopError(original, host, F(layer.A("default").weight), F(layer.B("default").weight), rows, cols, 4, 2.0);
            var start = NaiveFourBit.Quantize(original, false, 64);
            double qlora = Math.Sqrt(original.Zip(NaiveFourBit.Dequantize(start.Packed, start.Absmax, NaiveFourBit.Nf4, 64, original.Length)).Sum(p => Math.Pow(p.First - p.Second, 2)));
            Assert.True(loftq < qlora, $"{path}: LoftQ {loftq} vs QLoRA {qlora}");
        }
    }

    [Fact]
    public void LoftQOnAFourBitBaseIsAClearError()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, new NaiveLlamaConfig { ModelType = "llama", VocabSize = 40, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 1 }, new TinyLlamaOptions { Seed = 4 });
        using var model = ModelLoader.Load(dir, ScalarType.Float32, null, new BitsAndBytesConfig());
        var config = new LoraConfig { R = 4, TargetModules = TargetModules.FromNames("q_proj"), InitLoraWeights = InitLoraWeights.Loftq, LoftqConfig = LoraSubConfigs.LoftQ() };
        var e = Assert.Throws<PeftSharpException>(() => LoraModel.Create(model, config));
        Assert.Contains("full-precision base weight", e.Message);
    }
}
