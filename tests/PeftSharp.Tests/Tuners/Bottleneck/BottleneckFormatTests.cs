using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners.Bottleneck;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Tuners.LoraTestKit;

namespace PeftSharp.Tests.Tuners.Bottleneck;

/// <summary>Adapter folders in LLM-Adapters' and AdapterHub's formats, written by hand, read back and written again.</summary>
public class BottleneckFormatTests
{
    internal const string LlmAdaptersConfig = """
        {
          "adapter_dropout": 0.0,
          "base_model_name_or_path": "tiny-gpt2",
          "bias": "none",
          "bottleneck_size": 3,
          "inference_mode": true,
          "init_weights": "bert",
          "modules_to_save": null,
          "non_linearity": "tanh",
          "peft_type": "BOTTLENECK",
          "scaling": 1.5,
          "target_modules": [
            "c_fc",
            "mlp.c_proj"
          ],
          "task_type": "CAUSAL_LM",
          "use_adapterp": false,
          "use_parallel_adapter": false
        }
        """;

    static float[] Random(int n, int seed, double scale = 0.3)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)((r.NextDouble() * 2 - 1) * scale)).ToArray();
    }

    /// <summary>Writes an LLM-Adapters folder for the tiny GPT-2 (d = 3) and fills the naive model's adapters.</summary>
    internal static string WriteLlmAdaptersFolder(string dir, NaiveAdaptedGpt2? naive)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), LlmAdaptersConfig);
        var tensors = new List<NaiveTensor>();
        int e = Gpt2.NEmbd, inner = 4 * e, d = 3, seed = 100;
        for (int l = 0; l < Gpt2.NLayer; l++)
        {
            foreach (var (path, placement, size) in new[] { ($"transformer.h.{l}.mlp.c_fc", "input", e), ($"transformer.h.{l}.mlp.c_proj", "output", e) })
            {
                var down = Random(d * size, seed++);
                var up = Random(size * d, seed++);
                tensors.Add(new($"base_model.model.{path}.adapter_down.weight", NaiveDType.F32, [d, size], down));
                tensors.Add(new($"base_model.model.{path}.adapter_up.weight", NaiveDType.F32, [size, d], up));
                if (naive is not null) naive.Linear[path] = new NaiveLinearAdapter(placement, down, up, d, 1.5, "tanh");
            }
        }
        _ = inner;
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        return dir;
    }

    [Fact]
    public void LlmAdaptersFolderLoadsComputesAndRoundTrips()
    {
        using var tmp = new TempDir();
        var ckpt = TinyCheckpoints.WriteGpt2(tmp.File("base"), Gpt2, new TinyGpt2Options { Seed = 21 });
        var naive = new NaiveAdaptedGpt2(Gpt2, ckpt.Weights);
        string folder = WriteLlmAdaptersFolder(tmp.File("adapter"), naive);
        using var model = ModelLoader.Load(ckpt.Directory);
        var bn = BottleneckFiles.Load(model, folder);
        Assert.Equal(1.5, bn.Config!.ScalingValue);
        var ids = RandomIds(9, Gpt2.VocabSize, 8);
        Assert.True(MaxAbsDiff(naive.Logits(ids), Logits(model, ids)) < 1e-4);

        string again = tmp.File("again");
        BottleneckFiles.Save(bn, again, baseModelNameOrPath: "tiny-gpt2");
        var written = NaiveSafetensors.Read(Path.Combine(again, "adapter_model.safetensors"));
        var original = NaiveSafetensors.Read(Path.Combine(folder, "adapter_model.safetensors"));
        Assert.Equal(original.Keys.Order(), written.Keys.Order());
        foreach (var (k, t) in original) Assert.Equal(t.Values, written[k].Values);
        using var a = JsonDocument.Parse(LlmAdaptersConfig);
        using var b = JsonDocument.Parse(File.ReadAllText(Path.Combine(again, "adapter_config.json")));
        foreach (var p in a.RootElement.EnumerateObject())
            Assert.Equal(p.Value.GetRawText().Replace(" ", "").Replace("\n", ""), b.RootElement.GetProperty(p.Name).GetRawText().Replace(" ", "").Replace("\n", ""));
    }

    static string HubConfigJson(string name) => $$"""
        {
          "config": {
            "adapter_residual_before_ln": false,
            "architecture": null,
            "cross_adapter": false,
            "dropout": 0.0,
            "factorized_phm_W": true,
            "factorized_phm_rule": false,
            "hypercomplex_nonlinearity": "glorot-uniform",
            "init_weights": "bert",
            "init_weights_seed": null,
            "inv_adapter": null,
            "inv_adapter_reduction_factor": null,
            "is_parallel": false,
            "learn_phm": true,
            "leave_out": [],
            "ln_after": false,
            "ln_before": false,
            "mh_adapter": true,
            "non_linearity": "swish",
            "original_ln_after": true,
            "original_ln_before": false,
            "output_adapter": true,
            "phm_bias": true,
            "phm_c_init": "normal",
            "phm_dim": 4,
            "phm_init_range": 0.0001,
            "phm_layer": false,
            "phm_rank": 1,
            "reduction_factor": 8,
            "residual_before_ln": true,
            "scaling": 1.0,
            "shared_W_phm": false,
            "shared_phm_rule": true,
            "stochastic_depth": 0.0,
            "use_gating": false
          },
          "hidden_size": 16,
          "model_class": "GPT2LMHeadModel",
          "model_name": "tiny-gpt2",
          "model_type": "gpt2",
          "name": "{{name}}",
          "version": "adapters.1.2.0"
        }
        """;

    /// <summary>Writes an AdapterHub Houlsby folder (reduction factor 8: d = 2) for the tiny GPT-2 and fills the naive adapters.</summary>
    internal static string WriteAdapterHubFolder(string dir, string name, NaiveAdaptedGpt2? naive, bool withPrefix = true)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), HubConfigJson(name));
        var tensors = new List<NaiveTensor>();
        int e = Gpt2.NEmbd, d = 2, seed = 300;
        for (int l = 0; l < Gpt2.NLayer; l++)
            foreach (var (module, key) in new[] { ("attention_adapters", "attn"), ("output_adapters", "mlp") })
            {
                string p = $"{(withPrefix ? "transformer." : "")}h.{l}.{module}.adapters.{name}.";
                float[] dw = Random(d * e, seed++), db = Random(d, seed++), uw = Random(e * d, seed++), ub = Random(e, seed++);
                tensors.Add(new(p + "adapter_down.0.weight", NaiveDType.F32, [d, e], dw));
                tensors.Add(new(p + "adapter_down.0.bias", NaiveDType.F32, [d], db));
                tensors.Add(new(p + "adapter_up.weight", NaiveDType.F32, [e, d], uw));
                tensors.Add(new(p + "adapter_up.bias", NaiveDType.F32, [e], ub));
                if (naive is not null) naive.SubLayer[$"{l}.{key}"] = new NaiveHubAdapter("houlsby", dw, db, uw, ub, d, 1.0, "swish");
            }
        NaiveSafetensors.Write(Path.Combine(dir, "adapter.safetensors"), tensors);
        return dir;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AdapterHubFolderLoadsIntoTheRightParametersAndRoundTrips(bool withPrefix)
    {
        using var tmp = new TempDir();
        var ckpt = TinyCheckpoints.WriteGpt2(tmp.File("base"), Gpt2, new TinyGpt2Options { Seed = 22 });
        string folder = WriteAdapterHubFolder(tmp.File("hub"), "shakespeare", null, withPrefix);
        using var model = ModelLoader.Load(ckpt.Directory);
        Assert.True(AdapterHubFiles.IsAdapterHubFolder(folder));
        var hub = AdapterHubFiles.Load(model, folder);
        Assert.Equal("shakespeare", hub.Active);
        Assert.Equal(2, hub.Configs["shakespeare"].BottleneckSize(16, 0));
        // Parameters by formula: per location (H·d + d) + (d·H + H), two locations per layer.
        Assert.Equal(Gpt2.NLayer * 2L * (16 * 2 + 2 + 2 * 16 + 16), hub.ParameterCount("shakespeare"));
        var file = NaiveSafetensors.Read(Path.Combine(folder, "adapter.safetensors"));
        var param = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (k, t) in file)
            Assert.Equal(t.Values, Values(param[withPrefix ? k : "transformer." + k]));

        string again = tmp.File("again");
        AdapterHubFiles.Save(hub, again, "shakespeare", modelName: "tiny-gpt2");
        Assert.Equal(HubConfigJson("shakespeare").ReplaceLineEndings("\n"), File.ReadAllText(Path.Combine(again, "adapter_config.json")));
        var written = NaiveSafetensors.Read(Path.Combine(again, "adapter.safetensors"));
        Assert.Equal(file.Count, written.Count);
        foreach (var (k, t) in file) Assert.Equal(t.Values, written[withPrefix ? k : "transformer." + k].Values);
    }

    [Fact]
    public void PickleFilesAreRefusedInOneLine()
    {
        using var tmp = new TempDir();
        var ckpt = TinyCheckpoints.WriteGpt2(tmp.File("base"), Gpt2, new TinyGpt2Options { Seed = 23 });
        using var model = ModelLoader.Load(ckpt.Directory);
        string llm = tmp.WithConfig(LlmAdaptersConfig, "llm");
        File.WriteAllBytes(Path.Combine(llm, "adapter_model.bin"), [0x80, 0x02]);
        var ex = Assert.Throws<PeftSharpException>(() => BottleneckFiles.Load(model, llm));
        Assert.Contains("adapter_model.bin", ex.Message);
        Assert.Contains("pickle", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);

        string hub = tmp.WithConfig(HubConfigJson("x"), "hub");
        File.WriteAllBytes(Path.Combine(hub, "pytorch_adapter.bin"), [0x80, 0x02]);
        using var model2 = ModelLoader.Load(ckpt.Directory);
        var ex2 = Assert.Throws<PeftSharpException>(() => AdapterHubFiles.Load(model2, hub));
        Assert.Contains("pytorch_adapter.bin", ex2.Message);
    }

    [Fact]
    public void BadTensorsAreOneLineErrorsNamingFileAndKey()
    {
        using var tmp = new TempDir();
        var ckpt = TinyCheckpoints.WriteGpt2(tmp.File("base"), Gpt2, new TinyGpt2Options { Seed = 24 });
        string folder = WriteLlmAdaptersFolder(tmp.File("adapter"), null);
        string weights = Path.Combine(folder, "adapter_model.safetensors");
        var tensors = NaiveSafetensors.Read(weights);

        // Wrong shape.
        var wrong = tensors.Values.Select(t => t.Name.EndsWith("h.0.mlp.c_fc.adapter_down.weight") ? t with { Shape = [4, 12], Values = new float[48] } : t).ToList();
        NaiveSafetensors.Write(weights, wrong);
        using (var model = ModelLoader.Load(ckpt.Directory))
        {
            var ex = Assert.Throws<PeftSharpException>(() => BottleneckFiles.Load(model, folder));
            Assert.Contains("h.0.mlp.c_fc.adapter_down.weight", ex.Message);
            Assert.Contains("shape [4, 12]", ex.Message);
        }
        // Missing tensor.
        NaiveSafetensors.Write(weights, tensors.Values.Where(t => !t.Name.Contains("h.1.mlp.c_proj.adapter_up")));
        using (var model = ModelLoader.Load(ckpt.Directory))
        {
            var ex = Assert.Throws<PeftSharpException>(() => BottleneckFiles.Load(model, folder));
            Assert.Contains("missing tensor 'base_model.model.transformer.h.1.mlp.c_proj.adapter_up.weight'", ex.Message);
        }
        // Unknown tensor.
        NaiveSafetensors.Write(weights, tensors.Values.Append(new NaiveTensor("base_model.model.transformer.h.0.attn.c_attn.adapter_up.weight", NaiveDType.F32, [1], [0f])));
        using (var model = ModelLoader.Load(ckpt.Directory))
        {
            var ex = Assert.Throws<PeftSharpException>(() => BottleneckFiles.Load(model, folder));
            Assert.Contains("'base_model.model.transformer.h.0.attn.c_attn.adapter_up.weight' has no place", ex.Message);
            Assert.DoesNotContain('\n', ex.Message);
        }
    }

    [Theory]
    [InlineData("\"non_linearity\": \"tanh\"", "\"non_linearity\": \"cube\"", "non_linearity")]
    [InlineData("\"scaling\": 1.5", "\"scaling\": \"channel\"", "scaling")]
    [InlineData("\"bottleneck_size\": 3", "\"bottleneck_size\": 0", "bottleneck_size")]
    [InlineData("\"peft_type\": \"BOTTLENECK\"", "\"peft_type\": \"LORA\"", "peft_type")]
    public void BadConfigFieldsAreOneLineErrors(string from, string to, string field)
    {
        using var tmp = new TempDir();
        string dir = tmp.WithConfig(LlmAdaptersConfig.Replace(from, to));
        var ex = Assert.Throws<PeftSharpException>(() => BottleneckConfig.Load(dir));
        Assert.Contains($"'{field}'", ex.Message);
        Assert.Contains("adapter_config.json", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }
}
