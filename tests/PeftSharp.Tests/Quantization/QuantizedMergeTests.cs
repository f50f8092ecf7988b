using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using static PeftSharp.Tests.Quantization.QuantTestKit;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// <c>peftsharp merge</c> on a 4-bit folder: written in full precision it is exactly dequant(W) + s·B·A (computed
/// here by loops from the stored codes); with --quantize-output the merged layers are re-quantized, untouched layers
/// keep their codes, and the reported rounding matches what the file holds.
/// </summary>
public class QuantizedMergeTests
{
    static readonly NaiveLlamaConfig Llama = new()
    {
        ModelType = "llama", VocabSize = 40, HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
    };
    const int R = 4;
    const double Scaling = 8.0 / R;

    sealed record Setup(string Source, string Quantized, string Adapter, Dictionary<string, (float[] A, float[] B)> Factors);

    static Setup Prepare(int seed)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = seed });
        var quantized = Path.Combine(TinyCheckpoints.NewTempDirectory(), "q");
        var r = CliRunner.Run("quantize", "--model", dir, "--out", quantized);
        Assert.True(r.ExitCode == 0, r.Stderr);
        // A PEFT adapter on q_proj and v_proj, written with the test's own safetensors writer.
        var rng = new Random(seed);
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * 0.3)).ToArray();
        var factors = new Dictionary<string, (float[], float[])>();
        var tensors = new List<NaiveTensor>();
        for (int layer = 0; layer < Llama.NumHiddenLayers; layer++)
            foreach (var (proj, outDim) in new[] { ("q_proj", 32), ("v_proj", 16) })
            {
                string path = $"model.layers.{layer}.self_attn.{proj}";
                var a = Random(R * 32);
                var b = Random(outDim * R);
                factors[path + ".weight"] = (a, b);
                tensors.Add(new NaiveTensor($"base_model.model.{path}.lora_A.weight", NaiveDType.F32, [R, 32], a));
                tensors.Add(new NaiveTensor($"base_model.model.{path}.lora_B.weight", NaiveDType.F32, [outDim, R], b));
            }
        var adapter = TinyCheckpoints.NewTempDirectory("peftsharp-adapter-");
        NaiveSafetensors.Write(Path.Combine(adapter, "adapter_model.safetensors"), tensors);
        File.WriteAllText(Path.Combine(adapter, "adapter_config.json"),
            """{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM", "bias": "none"}""");
        return new Setup(dir, quantized, adapter, factors);
    }

    /// <summary>dequant(W) + s·B·A by loops, from the 4-bit folder's stored codes.</summary>
    static float[] ExactMerge(Dictionary<string, NaiveBnbReader.RawTensor> file, string key, (float[] A, float[] B) f)
    {
        var w = NaiveBnbReader.Dequantize(file, key).Values;
        int inDim = 32, outDim = w.Length / inDim;
        var merged = new float[w.Length];
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < inDim; i++)
            {
                double sum = 0;
                for (int k = 0; k < R; k++) sum += (double)f.B[o * R + k] * f.A[k * inDim + i];
                merged[o * inDim + i] = (float)(w[o * inDim + i] + Scaling * sum);
            }
        return merged;
    }

    [Fact]
    public void FullPrecisionMergeOfAFourBitFolderIsDequantizedWeightPlusDelta()
    {
        var s = Prepare(31);
        var source = NaiveBnbReader.Read(Path.Combine(s.Quantized, "model.safetensors"));
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "m");
        var r = CliRunner.Run("merge", "--model", s.Quantized, "--adapter", s.Adapter, "--out", outDir, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.False(r.Json().GetProperty("quantized").GetBoolean());
        Assert.Contains("rounding against the exact float32 merge", r.Stdout);
        var written = NaiveBnbReader.Read(Path.Combine(outDir, "model.safetensors"));
        var original = NaiveSafetensors.Read(Path.Combine(s.Source, "model.safetensors"));
        Assert.Equal(original.Keys.OrderBy(k => k), written.Keys.OrderBy(k => k)); // the full-precision layout again
        foreach (var key in original.Keys)
        {
            Assert.Equal("F32", written[key].DType);
            var got = written[key].Floats();
            if (s.Factors.TryGetValue(key, out var f))
            {
                var want = ExactMerge(source, key, f);
                Assert.True(got.Zip(want).All(p => Math.Abs(p.First - p.Second) <= 1e-6), key);
            }
            else if (IsQuantizedLinear(key, gpt2: false)) Assert.Equal(NaiveBnbReader.Dequantize(source, key).Values, got);
            else Assert.Equal(original[key].Values, got);
        }
        Assert.DoesNotContain("quantization_config", File.ReadAllText(Path.Combine(outDir, "config.json")));
    }

    [Fact]
    public void QuantizedMergeRequantizesMergedLayersAndReportsTheRounding()
    {
        var s = Prepare(32);
        var source = NaiveBnbReader.Read(Path.Combine(s.Quantized, "model.safetensors"));
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "m");
        var r = CliRunner.Run("merge", "--model", s.Quantized, "--adapter", s.Adapter, "--out", outDir, "--quantize-output", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var json = r.Json();
        Assert.True(json.GetProperty("quantized").GetBoolean());
        Assert.Equal(4, json.GetProperty("rounded_layers").GetInt32());
        var written = NaiveBnbReader.Read(Path.Combine(outDir, "model.safetensors"));
        Assert.Equal(source.Keys.OrderBy(k => k), written.Keys.OrderBy(k => k));
        double maxAbs = 0, error2 = 0, merged2 = 0, delta2 = 0;
        double halfGap = NaiveFourBit.LargestGap(NaiveFourBit.Nf4) / 2;
        foreach (var key in source.Keys.Where(k => k.EndsWith("_proj.weight")))
        {
            if (!s.Factors.TryGetValue(key, out var f))
            {
                Assert.Equal(source[key].Data, written[key].Data); // untouched layers keep their codes
                continue;
            }
            var exact = ExactMerge(source, key, f);
            var stored = NaiveBnbReader.Dequantize(written, key);
            // Re-quantized from the merged weights: within half the largest NF4 gap of each block's absmax.
            for (int i = 0; i < exact.Length; i++)
            {
                double d = stored.Values[i] - exact[i];
                Assert.True(Math.Abs(d) <= halfGap * stored.Absmax[i / 64] * (1 + 1e-5) + 1e-6, $"{key}[{i}]");
                maxAbs = Math.Max(maxAbs, Math.Abs(d));
                error2 += d * d;
                merged2 += (double)exact[i] * exact[i];
            }
            var w = NaiveBnbReader.Dequantize(source, key).Values;
            delta2 += exact.Zip(w).Sum(p => Math.Pow(p.First - p.Second, 2));
        }
        Assert.Equal(maxAbs, json.GetProperty("max_abs_error").GetDouble(), 1e-5);
        Assert.Equal(Math.Sqrt(error2 / merged2), json.GetProperty("relative_frobenius_error").GetDouble(), 1e-4);
        Assert.Equal(Math.Sqrt(error2 / delta2), json.GetProperty("error_relative_to_delta").GetDouble(), 1e-3);
        Assert.Contains("quantization_config", File.ReadAllText(Path.Combine(outDir, "config.json")));
    }

    [Fact]
    public void MergingAFullPrecisionModelWithQuantizeOutputWritesAFourBitFolder()
    {
        var s = Prepare(33);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "m");
        var r = CliRunner.Run("merge", "--model", s.Source, "--adapter", s.Adapter, "--out", outDir, "--quantize-output", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(14, r.Json().GetProperty("rounded_layers").GetInt32());
        var written = NaiveBnbReader.Read(Path.Combine(outDir, "model.safetensors"));
        Assert.Contains("model.layers.0.self_attn.q_proj.weight.nested_absmax", written.Keys); // nf4 + double quantization by default
        Assert.Contains("\"bnb_4bit_use_double_quant\": true", File.ReadAllText(Path.Combine(outDir, "config.json")));
    }

    [Fact]
    public void InspectCountsAFourBitFolderAsPeftDoes()
    {
        var s = Prepare(34);
        var plain = CliRunner.Run("inspect", "--model", s.Source, "--adapter", s.Adapter, "--json");
        var quantized = CliRunner.Run("inspect", "--model", s.Quantized, "--adapter", s.Adapter, "--json");
        Assert.True(quantized.ExitCode == 0, quantized.Stderr);
        // PEFT counts a Params4bit weight as numel(packed) × 2: the same totals as the full-precision model.
        Assert.Equal(plain.Json().GetProperty("all_params").GetInt64(), quantized.Json().GetProperty("all_params").GetInt64());
        Assert.Equal(plain.Json().GetProperty("trainable_params").GetInt64(), quantized.Json().GetProperty("trainable_params").GetInt64());
        Assert.Contains("4-bit: 14 linear layers (nf4, blocksize 64)", quantized.Stderr);
    }
}
