using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using static PeftSharp.Tests.Tuners.LoraTestKit;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// A LoRA adapter laid out as Python PEFT writes one (written here by the test's own safetensors writer and a
/// hand-written adapter_config.json), scored through the CLI and compared with the reference model run on
/// W + (α/r)·B·A computed by loops; then merged into a model folder and scored again.
/// </summary>
public class LoraCliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";
    const int Vocab = 1003;

    static string WriteAdapter(IEnumerable<(string Key, int[] Shape, float[] Values)> tensors, string configJson)
    {
        var dir = TinyCheckpoints.NewTempDirectory("peftsharp-adapter-");
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors.Select(t => new NaiveTensor(t.Key, NaiveDType.F32, t.Shape, t.Values)));
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), configJson);
        return dir;
    }

    static float[] RandomValues(Random rng, int count, double scale) => Enumerable.Range(0, count).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();

    static string PeftConfig(string targets, bool fanInFanOut, int r, int alpha) => $$"""
        {
          "alpha_pattern": {},
          "auto_mapping": null,
          "base_model_name_or_path": "tiny",
          "bias": "none",
          "fan_in_fan_out": {{(fanInFanOut ? "true" : "false")}},
          "inference_mode": true,
          "init_lora_weights": true,
          "layers_pattern": null,
          "layers_to_transform": null,
          "lora_alpha": {{alpha}},
          "lora_dropout": 0.05,
          "modules_to_save": null,
          "peft_type": "LORA",
          "r": {{r}},
          "rank_pattern": {},
          "revision": null,
          "target_modules": {{targets}},
          "task_type": "CAUSAL_LM",
          "use_dora": false,
          "use_rslora": false
        }
        """;

    static double NllOf(Func<int[], float[,]> logits, int context)
    {
        var ids = TinyBpe.ReferenceEncode(Text).ToArray();
        return NaiveScoring.WindowedMeanNll(ids, context, logits).MeanNll;
    }

    static double CliNll(string modelDir, params string[] extra)
    {
        var textPath = Path.Combine(TinyCheckpoints.NewTempDirectory(), "t.txt");
        File.WriteAllText(textPath, Text);
        var r = CliRunner.Run(["eval", "--model", modelDir, "--text", textPath, "--json", .. extra]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        return r.Json().GetProperty("nll").GetDouble();
    }

    [Fact]
    public void Gpt2PeftAdapterEvalMergeEval()
    {
        var config = new NaiveGpt2Config { VocabSize = Vocab, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };
        var dir = TinyCheckpoints.NewTempDirectory();
        // Hub-style keys (no "transformer." prefix) and a bf16 checkpoint: merge must keep both.
        var ckpt = TinyCheckpoints.WriteGpt2(dir, config, new TinyGpt2Options { Seed = 81, TransformerPrefix = false, DType = NaiveDType.BF16 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));

        var rng = new Random(82);
        var expected = Copy(ckpt.Weights);
        var tensors = new List<(string, int[], float[])>();
        for (int layer = 0; layer < 2; layer++)
        {
            var a = RandomValues(rng, 4 * 16, 0.3);
            var b = RandomValues(rng, 48 * 4, 0.3);
            tensors.Add(($"base_model.model.transformer.h.{layer}.attn.c_attn.lora_A.weight", [4, 16], a));
            tensors.Add(($"base_model.model.transformer.h.{layer}.attn.c_attn.lora_B.weight", [48, 4], b));
            AddTo(expected, $"h.{layer}.attn.c_attn.weight", Delta(a, b, 4, 16, 48, 8.0 / 4), conv1d: true);
        }
        var adapter = WriteAdapter(tensors, PeftConfig("[\"c_attn\"]", fanInFanOut: true, r: 4, alpha: 8));
        double want = NllOf(new NaiveGpt2(config, expected).Logits, config.NPositions);
        double baseNll = NllOf(new NaiveGpt2(config, ckpt.Weights).Logits, config.NPositions);
        Assert.True(Math.Abs(want - baseNll) > 1e-3);

        Assert.Equal(want, CliNll(dir, "--adapter", adapter), 1e-4);
        var merged = Path.Combine(TinyCheckpoints.NewTempDirectory(), "merged");
        var m = CliRunner.Run("merge", "--model", dir, "--adapter", adapter, "--out", merged);
        Assert.True(m.ExitCode == 0, m.Stderr);
        var source = NaiveSafetensors.Read(ckpt.WeightsPath);
        var written = NaiveSafetensors.Read(Path.Combine(merged, "model.safetensors"));
        Assert.Equal(source.Keys.Order(), written.Keys.Order());
        Assert.All(written.Values, t => Assert.Equal(NaiveDType.BF16, t.DType));
        Assert.Equal([16, 48], written["h.0.attn.c_attn.weight"].Shape); // Conv1D stays [in, out]
        Assert.True(File.Exists(Path.Combine(merged, "tokenizer.json")));
        // The merged weights are rounded to bf16 once more, so compare with the reference on those exact values.
        Assert.Equal(NllOf(new NaiveGpt2(config, written.ToDictionary(kv => kv.Key, kv => kv.Value.Values)).Logits, config.NPositions), CliNll(merged), 1e-4);
        Assert.Equal(want, CliNll(merged), 2e-3);
        // Nothing a user made is overwritten.
        CliRunner.AssertUserError(CliRunner.Run("merge", "--model", dir, "--adapter", adapter, "--out", merged));
    }

    [Fact]
    public void LlamaPeftAdapterEvalMergeEval()
    {
        var config = new NaiveLlamaConfig { ModelType = "llama", VocabSize = Vocab, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2,
                                            NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 40 };
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteLlama(dir, config, new TinyLlamaOptions { Seed = 83 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"tokenizer_class": "PreTrainedTokenizerFast"}""");
        var rng = new Random(84);
        var expected = Copy(ckpt.Weights);
        var tensors = new List<(string, int[], float[])>();
        for (int layer = 0; layer < 2; layer++)
            foreach (var (proj, outDim) in new[] { ("q_proj", 16), ("v_proj", 8) })
            {
                var a = RandomValues(rng, 8 * 16, 0.3);
                var b = RandomValues(rng, outDim * 8, 0.3);
                tensors.Add(($"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_A.weight", [8, 16], a));
                tensors.Add(($"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_B.weight", [outDim, 8], b));
                AddTo(expected, $"model.layers.{layer}.self_attn.{proj}.weight", Delta(a, b, 8, 16, outDim, 16.0 / 8), conv1d: false);
            }
        var adapter = WriteAdapter(tensors, PeftConfig("[\"q_proj\", \"v_proj\"]", fanInFanOut: false, r: 8, alpha: 16));
        double want = NllOf(new NaiveLlama(config, expected).Logits, config.MaxPositionEmbeddings);
        Assert.Equal(want, CliNll(dir, "--adapter", adapter), 1e-4);
        var merged = Path.Combine(TinyCheckpoints.NewTempDirectory(), "merged");
        Assert.Equal(0, CliRunner.Run("merge", "--model", dir, "--adapter", adapter, "--out", merged).ExitCode);
        Assert.Equal(want, CliNll(merged), 1e-4);
    }

    [Fact]
    public void InspectWorksFromConfigsAlone()
    {
        var model = TinyCheckpoints.NewTempDirectory();
        File.WriteAllText(Path.Combine(model, "config.json"),
            """{"model_type":"mistral","vocab_size":32000,"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"max_position_embeddings":32768}""");
        var adapter = TinyCheckpoints.NewTempDirectory();
        File.WriteAllText(Path.Combine(adapter, "adapter_config.json"), """{"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}""");
        var r = CliRunner.Run("inspect", "--model", model, "--adapter", adapter, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        // Per layer: q (4096→4096), k and v (4096→1024), o (4096→4096); LoRA adds r·(in + out) each.
        long perLayer = 16L * (4096 + 4096) * 2 + 16L * (4096 + 1024) * 2;
        long trainable = 32 * perLayer;
        Assert.Equal(trainable, r.Json().GetProperty("trainable_params").GetInt64());
        Assert.Equal(7_241_732_096 + trainable, r.Json().GetProperty("all_params").GetInt64());
    }
}
