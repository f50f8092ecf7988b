using System.Text.Json;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// (IA)³ through the command line: a PEFT-layout IA3 folder written by hand (the test's own safetensors writer), scored
/// with <c>eval --adapter</c> against the naive GPT-2 with the vectors applied row by row; merge, inspect, generate,
/// train --method ia3; and the one-line errors for bad folders.
/// </summary>
public class IA3CliTests
{
    const string Text = "Hello world, the hello! O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n";
    static readonly NaiveGpt2Config Config = new() { VocabSize = 1003, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };

    static string Model(out TinyCheckpoint ckpt)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        ckpt = TinyCheckpoints.WriteGpt2(dir, Config, new TinyGpt2Options { Seed = 91 });
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(TinyBpe.TokenizerJson()));
        File.WriteAllText(Path.Combine(dir, "text.txt"), Text);
        File.WriteAllText(Path.Combine(dir, "data.txt"), string.Concat(Enumerable.Repeat(Text, 6)));
        return dir;
    }

    static string Folder(IEnumerable<NaiveTensor> tensors, string configJson)
    {
        var dir = TinyCheckpoints.NewTempDirectory("peftsharp-ia3-");
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), configJson);
        return dir;
    }

    // PEFT's defaults for gpt2: c_attn (output, [3E, 1]) and mlp.c_proj (feed-forward: input, [1, 4E]).
    const string DefaultConfig = """
        {
          "auto_mapping": null,
          "base_model_name_or_path": "tiny",
          "exclude_modules": null,
          "fan_in_fan_out": true,
          "feedforward_modules": ["mlp.c_proj"],
          "inference_mode": true,
          "init_ia3_weights": true,
          "modules_to_save": null,
          "peft_type": "IA3",
          "peft_version": "0.17.1",
          "revision": null,
          "target_modules": ["c_attn", "mlp.c_proj"],
          "task_type": "CAUSAL_LM"
        }
        """;

    static (List<NaiveTensor> Tensors, Dictionary<string, double[]> Vectors) RandomVectors(int seed)
    {
        var rng = new Random(seed);
        var tensors = new List<NaiveTensor>();
        var vectors = new Dictionary<string, double[]>();
        for (int layer = 0; layer < 2; layer++)
            foreach (var (module, shape) in new[] { ("attn.c_attn", new[] { 48, 1 }), ("mlp.c_proj", new[] { 1, 64 }) })
            {
                var v = Enumerable.Range(0, shape[0] * shape[1]).Select(_ => (float)(0.4 + 1.2 * rng.NextDouble())).ToArray();
                tensors.Add(new NaiveTensor($"base_model.model.transformer.h.{layer}.{module}.ia3_l", NaiveDType.F32, shape, v));
                vectors[$"h.{layer}.{module}"] = v.Select(x => (double)x).ToArray();
            }
        return (tensors, vectors);
    }

    static NaiveHooks Hooks(Dictionary<string, double[]> vectors) => new()
    {
        LinearInput = (path, x) => path.EndsWith("mlp.c_proj") && vectors.TryGetValue(path, out var l) ? x.Select((v, j) => v * l[j]).ToArray() : x,
        LinearOutput = (path, y) => !path.EndsWith("mlp.c_proj") && vectors.TryGetValue(path, out var l) ? y.Select((v, j) => v * l[j]).ToArray() : y,
    };

    static double Nll(Func<int[], float[,]> logits) =>
        NaiveScoring.WindowedMeanNll(TinyBpe.ReferenceEncode(Text).ToArray(), Config.NPositions, logits).MeanNll;

    static double CliNll(string model, params string[] extra)
    {
        var r = CliRunner.Run(["eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--json", .. extra]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        return r.Json().GetProperty("nll").GetDouble();
    }

    [Fact]
    public void PeftFolderEvalMergeInspectGenerate()
    {
        var model = Model(out var ckpt);
        var (tensors, vectors) = RandomVectors(92);
        var adapter = Folder(tensors, DefaultConfig);
        double want = Nll(new NaiveGpt2(Config, ckpt.Weights) { Hooks = Hooks(vectors) }.Logits);
        Assert.True(Math.Abs(want - Nll(new NaiveGpt2(Config, ckpt.Weights).Logits)) > 1e-3);
        Assert.Equal(want, CliNll(model, "--adapter", adapter), 1e-4);

        var merged = Path.Combine(TinyCheckpoints.NewTempDirectory(), "merged");
        var m = CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--out", merged);
        Assert.True(m.ExitCode == 0, m.Stderr);
        Assert.Equal(want, CliNll(merged), 1e-4);

        // inspect: the trainable count is Σ over targets of out_features (c_attn: 3E) or in_features (mlp.c_proj: 4E).
        var i = CliRunner.Run("inspect", "--model", model, "--adapter", adapter, "--json");
        Assert.True(i.ExitCode == 0, i.Stderr);
        long trainable = Config.NLayer * (3L * Config.NEmbd + 4L * Config.NEmbd);
        long baseParams = ckpt.Weights.Values.Sum(w => (long)w.Length);
        Assert.Equal(trainable, i.Json().GetProperty("trainable_params").GetInt64());
        Assert.Equal(baseParams + trainable, i.Json().GetProperty("all_params").GetInt64());
        Assert.Contains("ia3", i.Stderr);

        var g = CliRunner.Run("generate", "--model", model, "--adapter", adapter, "--prompt", "Romeo", "--max-new-tokens", "4", "--json");
        Assert.True(g.ExitCode == 0, g.Stderr);
    }

    [Fact]
    public void TrainMethodIA3WritesAPeftFolderThatEvalReads()
    {
        var model = Model(out var ckpt);
        var outDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "ia3");
        var r = CliRunner.Run("train", "--model", model, "--data", Path.Combine(model, "data.txt"), "--out", outDir, "--method", "ia3",
            "--steps", "6", "--lr", "5e-2", "--batch-size", "2", "--seq-len", "32", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(6, r.Json().GetProperty("steps").GetInt32());
        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        Assert.Equal("IA3", cfg.RootElement.GetProperty("peft_type").GetString());
        Assert.True(cfg.RootElement.GetProperty("fan_in_fan_out").GetBoolean());
        var tensors = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal(4, tensors.Count);
        Assert.Equal([48, 1], tensors["base_model.model.transformer.h.0.attn.c_attn.ia3_l"].Shape);
        Assert.Equal([1, 64], tensors["base_model.model.transformer.h.1.mlp.c_proj.ia3_l"].Shape);
        Assert.Contains(tensors["base_model.model.transformer.h.0.attn.c_attn.ia3_l"].Values, v => Math.Abs(v - 1) > 1e-4); // trained away from ones
        var vectors = tensors.ToDictionary(kv => kv.Key["base_model.model.transformer.".Length..^".ia3_l".Length], kv => kv.Value.Values.Select(v => (double)v).ToArray());
        double want = Nll(new NaiveGpt2(Config, ckpt.Weights) { Hooks = Hooks(vectors) }.Logits);
        Assert.Equal(want, CliNll(model, "--adapter", outDir), 1e-4);
        Assert.True(want < Nll(new NaiveGpt2(Config, ckpt.Weights).Logits)); // trained on this very text
    }

    [Fact]
    public void BadFoldersExitOneWithOneLine()
    {
        var model = Model(out _);
        string Eval(string adapter) => CliRunner.AssertUserError(CliRunner.Run("eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--adapter", adapter));
        var (tensors, _) = RandomVectors(93);

        var line = Eval(Folder(tensors, DefaultConfig.Replace("\"IA3\"", "\"SUPER_IA3\"")));
        Assert.Contains("adapter_config.json", line);
        Assert.Contains("unknown peft_type \"SUPER_IA3\"", line);
        Assert.Contains("IA3", line.Split("known:")[1]);
        Assert.Contains("LORA", line);

        line = Eval(Folder(tensors, DefaultConfig.Replace("\"feedforward_modules\": [\"mlp.c_proj\"]", "\"feedforward_modules\": [\"c_fc\"]")));
        Assert.Contains("adapter_config.json", line);
        Assert.Contains("feedforward_modules", line);
        Assert.Contains("c_fc", line);

        var wrong = tensors.Select(t => t.Name.EndsWith("h.1.mlp.c_proj.ia3_l") ? new NaiveTensor(t.Name, NaiveDType.F32, [64, 1], t.Values) : t);
        line = Eval(Folder(wrong, DefaultConfig));
        Assert.Contains("adapter_model.safetensors", line);
        Assert.Contains("transformer.h.1.mlp.c_proj.ia3_l", line);
        Assert.Contains("[1, 64]", line);

        var pickle = TinyCheckpoints.NewTempDirectory();
        File.WriteAllText(Path.Combine(pickle, "adapter_config.json"), DefaultConfig);
        File.WriteAllBytes(Path.Combine(pickle, "adapter_model.bin"), [0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e]);
        line = Eval(pickle);
        Assert.Contains("adapter_model.bin", line);

        // A LoRA-only command on an (IA)³ adapter says so in one line.
        line = CliRunner.AssertUserError(CliRunner.Run("eval", "--model", model, "--text", Path.Combine(model, "text.txt"), "--adapter", Folder(tensors, DefaultConfig), "--rank", "2"));
        Assert.Contains("(IA)³", line);
    }
}
