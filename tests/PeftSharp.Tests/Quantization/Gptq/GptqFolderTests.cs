using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Quantization.Gptq;
using PeftSharp.Tests.Reference;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tests.Quantization.Gptq;

/// <summary>
/// GPTQ folders written by hand in plain loops (as AutoGPTQ/GPTQModel lay them out) load into PeftSharp with every
/// linear weight equal to the plain-loop dequantization and every other tensor unchanged; PeftSharp writes the same
/// folder back bit for bit.
/// </summary>
public class GptqFolderTests
{
    internal static readonly NaiveLlamaConfig Llama = new()
    {
        ModelType = "llama", VocabSize = 40, HiddenSize = 64, IntermediateSize = 96, NumHiddenLayers = 1, NumAttentionHeads = 4, NumKeyValueHeads = 2,
    };

    internal sealed record HandWritten(string Dir, Dictionary<string, float[]> Expected, TinyCheckpoint Float);

    /// <summary>A float Llama checkpoint and a GPTQ folder whose *_proj layers hold random codes, scales, zeros and g_idx.</summary>
    internal static HandWritten Write(int bits, bool v2, bool sym, bool actOrder, int groupSize = 32, int seed = 1)
    {
        var floatDir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(floatDir, Llama, new TinyLlamaOptions { Seed = seed });
        var rng = new Random(seed);
        int maxq = (1 << bits) - 1;
        var tensors = new List<KeyValuePair<string, NaiveGptq.RawTensor>>();
        var expected = new Dictionary<string, float[]>();
        foreach (var key in ckpt.TensorOrder)
        {
            var shape = ckpt.Shapes[key];
            if (!key.EndsWith("_proj.weight"))
            {
                tensors.Add(new(key, NaiveGptq.F32(ckpt.Weights[key], shape)));
                expected[key] = ckpt.Weights[key];
                continue;
            }
            int outF = shape[0], inF = shape[1], groups = inF / groupSize;
            var q = new int[inF, outF];
            for (int i = 0; i < inF; i++)
                for (int o = 0; o < outF; o++) q[i, o] = rng.Next(maxq + 1);
            var scales = new float[groups, outF];
            var zeros = new float[groups, outF];
            var stored = new int[groups, outF];
            for (int g = 0; g < groups; g++)
                for (int o = 0; o < outF; o++)
                {
                    scales[g, o] = (float)(Half)(0.005 + 0.03 * rng.NextDouble());
                    int z = sym ? 1 << (bits - 1) : v2 ? rng.Next(maxq + 1) : 1 + rng.Next(maxq + 1);
                    zeros[g, o] = z;
                    stored[g, o] = v2 ? z : z - 1;
                }
            var gIdx = Enumerable.Range(0, inF).Select(i => i / groupSize).ToArray();
            if (actOrder) gIdx = gIdx.OrderBy(_ => rng.Next()).ToArray();
            string layer = key[..^".weight".Length];
            tensors.Add(new(layer + ".qweight", NaiveGptq.I32(NaiveGptq.Flat(NaiveGptq.PackRows(q, bits)), inF / 32 * bits, outF)));
            tensors.Add(new(layer + ".qzeros", NaiveGptq.I32(NaiveGptq.Flat(NaiveGptq.PackColumns(stored, bits)), groups, outF / 32 * bits)));
            tensors.Add(new(layer + ".scales", NaiveGptq.F16(scales.Cast<float>().ToArray(), groups, outF)));
            tensors.Add(new(layer + ".g_idx", NaiveGptq.I32(gIdx, inF)));
            expected[key] = NaiveGptq.Dequantize(q, scales, zeros, gIdx);
        }
        var dir = TinyCheckpoints.NewTempDirectory();
        var config = JsonNode.Parse(ckpt.ConfigJson)!.AsObject();
        config["quantization_config"] = new JsonObject
        {
            ["bits"] = bits, ["group_size"] = groupSize, ["desc_act"] = actOrder, ["sym"] = sym, ["quant_method"] = "gptq",
            ["checkpoint_format"] = v2 ? "gptq_v2" : "gptq", ["damp_percent"] = 0.01, ["true_sequential"] = true,
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        NaiveGptq.Write(Path.Combine(dir, "model.safetensors"), tensors);
        return new(dir, expected, ckpt);
    }

    public static TheoryData<int, bool, bool, bool> Cases()
    {
        var data = new TheoryData<int, bool, bool, bool>();
        foreach (int bits in new[] { 2, 3, 4, 8 })
        {
            data.Add(bits, false, true, false);  // v1, symmetric
            data.Add(bits, true, false, true);   // v2, asymmetric, act-order
        }
        data.Add(4, false, false, true);         // v1, asymmetric, act-order
        data.Add(3, true, true, false);          // v2, symmetric
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void HandWrittenFolderLoadsAsThePlainLoopDequantization(int bits, bool v2, bool sym, bool actOrder)
    {
        var f = Write(bits, v2, sym, actOrder, seed: bits * 7 + (v2 ? 1 : 0));
        using var model = ModelLoader.Load(f.Dir);
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module);
        int layers = 0;
        foreach (var (key, values) in f.Expected)
        {
            var actual = parameters[key].detach().contiguous().data<float>().ToArray();
            if (key.EndsWith("_proj.weight"))
            {
                layers++;
                Assert.NotNull(GptqLayers.Of((Linear)modules[key[..^".weight".Length]]));
                for (int k = 0; k < values.Length; k++) Assert.Equal(values[k], actual[k], 6);
            }
            else Assert.Equal(values, actual);
        }
        Assert.Equal(7, layers);
    }

    [Theory]
    [InlineData(3, false, false, true)]
    [InlineData(4, true, true, false)]
    [InlineData(8, false, false, false)]
    [InlineData(2, true, false, true)]
    public void WritingTheLoadedModelReproducesTheFolderBitForBit(int bits, bool v2, bool sym, bool actOrder)
    {
        var f = Write(bits, v2, sym, actOrder, seed: 3 + bits);
        using var model = ModelLoader.Load(f.Dir);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "out");
        var config = GptqConfig.FromModelConfig(model.Config)!;
        GptqCheckpoint.Save(model, f.Dir, outDir, config);
        var original = NaiveGptq.Read(Path.Combine(f.Dir, "model.safetensors"));
        var written = NaiveGptq.Read(Path.Combine(outDir, "model.safetensors"));
        Assert.Equal(original.Keys.Order(), written.Keys.Order());
        foreach (var (key, t) in original)
        {
            Assert.Equal(t.DType, written[key].DType);
            Assert.Equal(t.Shape, written[key].Shape);
            Assert.True(t.Data.AsSpan().SequenceEqual(written[key].Data), key);
        }
        var back = GptqConfig.FromModelConfig(ModelConfig.Load(outDir))!;
        Assert.Equal(config, back);
    }

    [Fact]
    public void ShapeMismatchNamesTheTensor()
    {
        var f = Write(4, false, true, false);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(f.Dir, "config.json")))!.AsObject();
        cfg["quantization_config"]!["bits"] = 8; // tensors are packed for 4 bits
        File.WriteAllText(Path.Combine(f.Dir, "config.json"), cfg.ToJsonString());
        var e = Assert.Throws<PeftSharpException>(() => ModelLoader.Load(f.Dir));
        Assert.Contains(".qweight", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        cfg["quantization_config"]!["bits"] = 5;
        File.WriteAllText(Path.Combine(f.Dir, "config.json"), cfg.ToJsonString());
        e = Assert.Throws<PeftSharpException>(() => ModelLoader.Load(f.Dir));
        Assert.Contains("bits", e.Message);
    }
}
