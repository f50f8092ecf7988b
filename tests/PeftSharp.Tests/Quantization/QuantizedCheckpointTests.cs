using System.Globalization;
using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Quantization.QuantTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// <c>peftsharp quantize</c> writes the transformers/bitsandbytes 4-bit format: read back with an independent reader
/// and dequantized, every layer equals the plain-loop quantizer's values; other tensors are unchanged; config.json
/// carries transformers' quantization_config; the folder loads 4-bit by itself.
/// </summary>
public class QuantizedCheckpointTests
{
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 40, NEmbd = 32, NLayer = 2, NHead = 2, NPositions = 24 };
    static readonly NaiveLlamaConfig Llama = new()
    {
        ModelType = "llama", VocabSize = 40, HiddenSize = 32, IntermediateSize = 40, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
    };

    [Theory]
    [InlineData(true, false, false)]
    [InlineData(true, true, false)]
    [InlineData(false, false, false)]
    [InlineData(false, true, true)]  // bf16 checkpoint, double quantization
    public void QuantizedFolderHoldsTheIndependentQuantizersValues(bool gpt2, bool doubleQuant, bool bf16)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var dtype = bf16 ? NaiveDType.BF16 : NaiveDType.F32;
        var ckpt = gpt2 ? TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 21, DType = dtype })
                        : TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 22, DType = dtype });
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{}");
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "q");
        string[] args = ["quantize", "--model", dir, "--out", outDir, "--json", .. doubleQuant ? new[] { "--double-quant" } : []];
        var r = CliRunner.Run(args);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(gpt2 ? 8 : 14, r.Json().GetProperty("layers").GetInt32());
        Assert.True(File.Exists(Path.Combine(outDir, "tokenizer_config.json"))); // side files copied

        var file = NaiveBnbReader.Read(Path.Combine(outDir, "model.safetensors"));
        var expectedKeys = new HashSet<string>();
        var roundTripped = new Dictionary<string, float[]>();
        string dtypeName = bf16 ? "bfloat16" : "float32";
        foreach (var (key, values) in ckpt.Weights)
        {
            expectedKeys.Add(key);
            if (!IsQuantizedLinear(key, gpt2))
            {
                Assert.Equal(bf16 ? "BF16" : "F32", file[key].DType);
                Assert.Equal(values, file[key].Floats());
                roundTripped[key] = values;
                continue;
            }
            var (w, outDim, inDim) = OutIn(values, ckpt.Shapes[key], gpt2);
            var naive = NaiveFourBit.Quantize(w, false, 64);
            Assert.Equal("U8", file[key].DType);
            Assert.Equal(new[] { (w.Length + 1) / 2, 1 }, file[key].Shape);
            Assert.Equal(naive.Packed, file[key].Data);
            Assert.Equal(NaiveFourBit.Nf4, file[key + ".quant_map"].Floats());
            var stored = NaiveBnbReader.Dequantize(file, key);
            string prefix = $"{{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"{dtypeName}\", \"shape\": [{outDim}, {inDim}]";
            string[] suffixes = [".absmax", ".quant_map", ".quant_state.bitsandbytes__nf4"];
            if (!doubleQuant)
            {
                Assert.Equal(prefix + "}", stored.StateJson);
                Assert.Equal(naive.Absmax, file[key + ".absmax"].Floats());
                Assert.Equal(NaiveFourBit.Dequantize(naive.Packed, naive.Absmax, NaiveFourBit.Nf4, 64, w.Length), stored.Values);
            }
            else
            {
                suffixes = [.. suffixes, ".nested_absmax", ".nested_quant_map"];
                Assert.StartsWith(prefix + ", \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": ", stored.StateJson);
                Assert.Equal("U8", file[key + ".absmax"].DType);
                float offset = (float)stored.State.GetProperty("nested_offset").GetDouble();
                Assert.Equal(naive.Absmax.Average(v => (double)v), offset, 1e-6 * naive.Absmax.Max());
                var map = file[key + ".nested_quant_map"].Floats();
                Assert.Equal(256, map.Length);
                var (codes, absmax2) = NaiveFourBit.QuantizeBlockwise8(naive.Absmax.Select(a => a - offset).ToArray(), map, 256);
                Assert.Equal(codes, file[key + ".absmax"].Data);
                Assert.Equal(absmax2, file[key + ".nested_absmax"].Floats());
                var restored = codes.Select((c, i) => map[c] * absmax2[i / 256] + offset).ToArray();
                Assert.Equal(NaiveFourBit.Dequantize(naive.Packed, restored, NaiveFourBit.Nf4, 64, w.Length), stored.Values);
            }
            foreach (var s in suffixes) expectedKeys.Add(key + s);
            roundTripped[key] = gpt2 ? Transpose(stored.Values, outDim, inDim) : stored.Values;
        }
        Assert.Equal(expectedKeys.OrderBy(k => k, StringComparer.Ordinal), file.Keys.OrderBy(k => k, StringComparer.Ordinal));

        // config.json: the source's fields plus transformers' quantization_config.
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")));
        var q = config.RootElement.GetProperty("quantization_config");
        Assert.Equal("bitsandbytes", q.GetProperty("quant_method").GetString());
        Assert.True(q.GetProperty("load_in_4bit").GetBoolean());
        Assert.True(q.GetProperty("_load_in_4bit").GetBoolean());
        Assert.False(q.GetProperty("load_in_8bit").GetBoolean());
        Assert.Equal("nf4", q.GetProperty("bnb_4bit_quant_type").GetString());
        Assert.Equal(doubleQuant, q.GetProperty("bnb_4bit_use_double_quant").GetBoolean());
        Assert.Equal("float32", q.GetProperty("bnb_4bit_compute_dtype").GetString());
        Assert.Equal("uint8", q.GetProperty("bnb_4bit_quant_storage").GetString());
        Assert.Equal(6.0, q.GetProperty("llm_int8_threshold").GetDouble());
        Assert.Equal(JsonValueKind.Null, q.GetProperty("llm_int8_skip_modules").ValueKind);
        using var source = JsonDocument.Parse(ckpt.ConfigJson);
        foreach (var p in source.RootElement.EnumerateObject())
            Assert.Equal(p.Value.GetRawText(), config.RootElement.GetProperty(p.Name).GetRawText());

        // The folder loads in 4 bits by itself and computes the reference model on the stored values.
        using var model = ModelLoader.Load(outDir);
        Assert.True(PeftSharp.Quantization.QuantizedModels.IsQuantized(model));
        var ids = RandomIds(11, 40, 1);
        var want = gpt2 ? new NaiveGpt2(Gpt2, roundTripped).Logits(ids) : new NaiveLlama(Llama, roundTripped).Logits(ids);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);

        // Never into a non-empty folder.
        var again = CliRunner.Run("quantize", "--model", dir, "--out", outDir);
        Assert.Contains("not empty", CliRunner.AssertUserError(again));
        Assert.Contains("already quantized", CliRunner.AssertUserError(CliRunner.Run("quantize", "--model", outDir, "--out", outDir + "-2")));
    }

    [Fact]
    public void SavingInFullPrecisionWritesTheDequantizedWeightsInTheSourceLayout()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 23 });
        using var model = ModelLoader.Load(dir, ScalarType.Float32, null, new PeftSharp.Quantization.BitsAndBytesConfig());
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "fp");
        PeftSharp.Quantization.QuantizedCheckpoint.Save(model, dir, outDir, quantization: null);
        var file = NaiveBnbReader.Read(Path.Combine(outDir, "model.safetensors"));
        var want = RoundTripped(ckpt, gpt2: true);
        Assert.Equal(want.Keys.OrderBy(k => k), file.Keys.OrderBy(k => k));
        foreach (var (key, values) in want)
        {
            Assert.Equal("F32", file[key].DType);
            Assert.Equal(ckpt.Shapes[key], file[key].Shape); // Conv1D stays [in, out]
            Assert.Equal(values, file[key].Floats());
        }
        Assert.DoesNotContain("quantization_config", File.ReadAllText(Path.Combine(outDir, "config.json")));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void EvalWithLoadIn4BitMatchesTheReferenceAndStaysCloseToFullPrecision(bool gpt2)
    {
        const int vocab = 1003;
        var dir = TinyCheckpoints.NewTempDirectory();
        var gptConfig = new NaiveGpt2Config { VocabSize = vocab, NEmbd = 32, NLayer = 2, NHead = 2, NPositions = 32 };
        var llamaConfig = new NaiveLlamaConfig { ModelType = "llama", VocabSize = vocab, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 48 };
        var ckpt = gpt2 ? TinyCheckpoints.WriteGpt2(dir, gptConfig, new TinyGpt2Options { Seed = 24, InitStd = 0.05 })
                        : TinyCheckpoints.WriteLlama(dir, llamaConfig, new TinyLlamaOptions { Seed = 25, InitStd = 0.05 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(Tokenization.TinyBpe.TokenizerJson()));
        const string text = "O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;\nOr, if thou wilt not, be but sworn my love.\n";
        var textPath = Path.Combine(dir, "text.txt");
        File.WriteAllText(textPath, text);
        var ids = Tokenization.TinyBpe.ReferenceEncode(text).ToArray();
        int context = gpt2 ? gptConfig.NPositions : llamaConfig.MaxPositionEmbeddings;
        Func<IReadOnlyDictionary<string, float[]>, Func<int[], float[,]>> logits = w =>
            gpt2 ? new NaiveGpt2(gptConfig, w).Logits : new NaiveLlama(llamaConfig, w).Logits;
        var (count, fp32) = NaiveScoring.WindowedMeanNll(ids, context, logits(ckpt.Weights));
        var (_, quantized) = NaiveScoring.WindowedMeanNll(ids, context, logits(RoundTripped(ckpt, gpt2)));

        var r = CliRunner.Run("eval", "--model", dir, "--text", textPath, "--load-in-4bit", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(count, r.Json().GetProperty("tokens").GetInt32());
        double nll = r.Json().GetProperty("nll").GetDouble();
        Assert.Equal(quantized, nll, 1e-4);
        Assert.NotEqual(fp32, nll, 1e-6);
        Assert.True(Math.Abs(nll - fp32) < 0.02 * fp32, $"4-bit NLL {nll} vs float32 {fp32}");

        // bf16 compute and double quantization run and stay close too.
        var bf = CliRunner.Run("eval", "--model", dir, "--text", textPath, "--load-in-4bit", "--double-quant", "--compute-dtype", "bfloat16", "--json");
        Assert.True(bf.ExitCode == 0, bf.Stderr);
        Assert.True(Math.Abs(bf.Json().GetProperty("nll").GetDouble() - fp32) < 0.03 * fp32);

        // generate runs on 4-bit layers.
        var g = CliRunner.Run("generate", "--model", dir, "--prompt", "Romeo", "--max-new-tokens", "5", "--load-in-4bit", "--json");
        Assert.True(g.ExitCode == 0, g.Stderr);
        Assert.Equal(5, g.Json().GetProperty("tokens").GetInt32());
    }

    [Fact]
    public void QuantizationFlagsWithoutLoadIn4BitAreUserErrors()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 26 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(Tokenization.TinyBpe.TokenizerJson()));
        var text = Path.Combine(dir, "t.txt");
        File.WriteAllText(text, "hello world hello");
        Assert.Contains("--quant-type", CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", text, "--quant-type", "fp4")));
        Assert.Contains("--compute-dtype", CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", text, "--compute-dtype", "bfloat16")));
        Assert.Contains("nf4 or fp4", CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", text, "--load-in-4bit", "--quant-type", "int4")));
        Assert.Contains("--blocksize", CliRunner.AssertUserError(CliRunner.Run("eval", "--model", dir, "--text", text, "--load-in-4bit", "--blocksize", "100")));
    }
}
