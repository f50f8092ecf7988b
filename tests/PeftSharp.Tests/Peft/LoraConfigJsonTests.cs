using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Peft;

public class LoraConfigJsonTests
{
    /// <summary>
    /// What Python PEFT (0.20.1.dev0, main at 5d602fd) writes for <c>LoraConfig(target_modules=["c_attn"])</c>:
    /// <c>json.dumps(asdict(config) minus runtime_config, indent=2, sort_keys=True)</c>. Written out field by field from
    /// PEFT's dataclass defaults: every key, sorted; "," at line ends; ": " after keys; no trailing newline.
    /// </summary>
    private static readonly string DefaultC_AttnJson = string.Join("\n",
        "{",
        "  \"alora_invocation_tokens\": null,",
        "  \"alpha_pattern\": {},",
        "  \"arrow_config\": null,",
        "  \"auto_mapping\": null,",
        "  \"base_model_name_or_path\": null,",
        "  \"bias\": \"none\",",
        "  \"corda_config\": null,",
        "  \"ensure_weight_tying\": false,",
        "  \"eva_config\": null,",
        "  \"exclude_modules\": null,",
        "  \"fan_in_fan_out\": false,",
        "  \"inference_mode\": false,",
        "  \"init_lora_weights\": true,",
        "  \"kasa_config\": null,",
        "  \"layer_replication\": null,",
        "  \"layers_pattern\": null,",
        "  \"layers_to_transform\": null,",
        "  \"loftq_config\": {},",
        "  \"lora_alpha\": 8,",
        "  \"lora_bias\": false,",
        "  \"lora_dropout\": 0.0,",
        "  \"lora_ga_config\": null,",
        "  \"megatron_config\": null,",
        "  \"megatron_core\": \"megatron.core\",",
        "  \"modules_to_save\": null,",
        "  \"monteclora_config\": null,",
        "  \"peft_type\": \"LORA\",",
        "  \"peft_version\": \"0.20.1.dev0@5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40\",",
        "  \"qalora_group_size\": 16,",
        "  \"r\": 8,",
        "  \"rank_pattern\": {},",
        "  \"revision\": null,",
        "  \"target_modules\": [",
        "    \"c_attn\"",
        "  ],",
        "  \"target_parameters\": null,",
        "  \"task_type\": null,",
        "  \"trainable_token_indices\": null,",
        "  \"use_bdlora\": null,",
        "  \"use_dora\": false,",
        "  \"use_qalora\": false,",
        "  \"use_rslora\": false,",
        "  \"velora_config\": null",
        "}");

    private static string ConfigPath(string dir) => Path.Combine(dir, "adapter_config.json");

    [Fact]
    public void DefaultConfig_IsWrittenByteForByteAsPeftWritesIt()
    {
        using var tmp = new TempDir();
        var config = new LoraConfig { TargetModules = new[] { "c_attn" } };
        string dir = tmp.File("new/nested/adapter"); // Save creates missing folders

        config.Save(dir);

        byte[] written = File.ReadAllBytes(ConfigPath(dir));
        Assert.Equal(DefaultC_AttnJson, Encoding.ASCII.GetString(written));
        Assert.Equal(Encoding.ASCII.GetBytes(DefaultC_AttnJson), written);
        Assert.Equal(DefaultC_AttnJson, config.ToJson());
        Assert.Single(Directory.GetFiles(dir)); // the temporary file was renamed away
    }

    [Fact]
    public void Save_ReplacesAnExistingFile_AndRejectsAFileAsFolder()
    {
        using var tmp = new TempDir();
        string dir = tmp.WithConfig("old contents");
        new LoraConfig { TargetModules = new[] { "c_attn" } }.Save(dir);
        Assert.Equal(DefaultC_AttnJson, File.ReadAllText(ConfigPath(dir)));
        Assert.Single(Directory.GetFiles(dir));

        string file = tmp.File("a-file");
        File.WriteAllText(file, "x");
        var ex = Assert.Throws<PeftSharpException>(() => new LoraConfig { TargetModules = new[] { "c_attn" } }.Save(file));
        Assert.Contains(file, ex.Message);
    }

    [Fact]
    public void DefaultConfig_ReadBack_GivesPeftDefaults()
    {
        var c = LoraConfig.FromJson(DefaultC_AttnJson);
        Assert.Equal("LORA", c.PeftType);
        Assert.Null(c.TaskType);
        Assert.Equal(8, c.R);
        Assert.Equal(8.0, c.LoraAlpha);
        Assert.Equal(0.0, c.LoraDropout);
        Assert.Equal(["c_attn"], c.TargetModules!.Names!);
        Assert.Null(c.ExcludeModules);
        Assert.Equal("none", c.Bias);
        Assert.False(c.FanInFanOut);
        Assert.Equal(InitLoraWeights.True, c.InitLoraWeights);
        Assert.False(c.UseRslora);
        Assert.False(c.UseDora);
        Assert.Empty(c.RankPattern!);
        Assert.Empty(c.AlphaPattern!);
        Assert.Null(c.LayersToTransform);
        Assert.Null(c.LayersPattern);
        Assert.Empty(c.LoftqConfig!);
        Assert.Equal("megatron.core", c.MegatronCore);
        Assert.Equal(16, c.QaloraGroupSize);
        Assert.Equal(PeftConfig.MatchedPeftVersion, c.PeftVersion);
        Assert.Empty(c.ExtensionData);
        Assert.Empty(c.Warnings);
    }

    [Fact]
    public void RoundTrip_KeepsEveryFieldAndTheExactBytes()
    {
        using var tmp = new TempDir();
        var config = new LoraConfig
        {
            TaskType = TaskTypes.CausalLm,
            BaseModelNameOrPath = "gpt2",
            Revision = "main",
            InferenceMode = true,
            R = 16,
            LoraAlpha = 32,
            LoraDropout = 0.05,
            TargetModules = new[] { "v_proj", "q_proj", "q_proj" },
            ExcludeModules = TargetModules.FromRegex(@".*lm_head"),
            FanInFanOut = true,
            Bias = "lora_only",
            UseRslora = true,
            ModulesToSave = ["score", "classifier"],
            InitLoraWeights = InitLoraWeights.PissaNiter(4),
            LayersToTransform = new[] { 0, 2, 5 },
            LayersPattern = "layers",
            RankPattern = new(StringComparer.Ordinal) { ["q_proj"] = 4, ["layers\\.0\\..*"] = 2 },
            AlphaPattern = new(StringComparer.Ordinal) { ["v_proj"] = 8.5 },
            TrainableTokenIndices = TrainableTokenIndices.ForModules(
                [new("embed_tokens", new[] { 0, 1 }), new("lm_head", new[] { 7 })]),
            AloraInvocationTokens = [1, 2, 3],
            LayerReplication = [new LayerRange(0, 4), new LayerRange(2, 5)],
            TargetParameters = ["feed_forward.experts.down_proj"],
            VeloraConfig = new JsonObject { ["num_groups"] = 32 },
            EnsureWeightTying = true,
        };
        string dir = tmp.File("rt");
        config.Save(dir);
        string first = File.ReadAllText(ConfigPath(dir));

        var back = LoraConfig.Load(dir);
        Assert.Equal(16, back.R);
        Assert.Equal(32.0, back.LoraAlpha);
        Assert.Equal(0.05, back.LoraDropout);
        Assert.Equal(TargetModules.FromNames("q_proj", "v_proj"), back.TargetModules);
        Assert.Equal(".*lm_head", back.ExcludeModules!.Regex);
        Assert.Equal("pissa_niter_4", back.InitLoraWeights.Method);
        Assert.Equal(4, back.InitLoraWeights.PissaIterations);
        Assert.False(back.LayersToTransform!.IsSingle);
        Assert.Equal([0, 2, 5], back.LayersToTransform.Items);
        Assert.True(back.LayersPattern!.IsSingle);
        Assert.Equal("layers", back.LayersPattern.Items[0]);
        Assert.Equal(2, back.RankPattern!["layers\\.0\\..*"]);
        Assert.Equal(8.5, back.AlphaPattern!["v_proj"]);
        Assert.Equal([7], back.TrainableTokenIndices!.PerModule!["lm_head"]);
        Assert.Equal([new LayerRange(0, 4), new LayerRange(2, 5)], back.LayerReplication!);
        Assert.Equal(["score", "classifier"], back.ModulesToSave!);
        Assert.True(back.InferenceMode);
        Assert.Equal("CAUSAL_LM", back.TaskType);
        // VeloraConfig(**{"num_groups": 32}) gets the other defaults, as PEFT's asdict writes them
        Assert.Equal("{\"num_groups\":32,\"scale\":1.0,\"init_type\":\"batch_average\"}", back.VeloraConfig!.ToJsonString());

        back.Save(dir);
        Assert.Equal(first, File.ReadAllText(ConfigPath(dir)));

        // spot-check the text Python would print for the non-default values
        Assert.Contains("\n  \"lora_dropout\": 0.05,\n", first);
        Assert.Contains("\n  \"lora_alpha\": 32,\n", first);
        Assert.Contains("\n  \"target_modules\": [\n    \"q_proj\",\n    \"v_proj\"\n  ],\n", first);
        Assert.Contains("\n  \"layers_to_transform\": [\n    0,\n    2,\n    5\n  ],\n", first);
        Assert.Contains("\n  \"layers_pattern\": \"layers\",\n", first);
        Assert.Contains("\n  \"rank_pattern\": {\n    \"layers\\\\.0\\\\..*\": 2,\n    \"q_proj\": 4\n  },\n", first);
        Assert.Contains("\n  \"alpha_pattern\": {\n    \"v_proj\": 8.5\n  },\n", first);
        Assert.Contains("\n  \"layer_replication\": [\n    [\n      0,\n      4\n    ],\n    [\n      2,\n      5\n    ]\n  ],\n", first);
        Assert.Contains("\n  \"velora_config\": {\n    \"init_type\": \"batch_average\",\n    \"num_groups\": 32,\n    \"scale\": 1.0\n  }\n}", first);
    }

    [Fact]
    public void UnknownFutureField_IsAcceptedKeptAndWrittenBack()
    {
        using var tmp = new TempDir();
        string dir = tmp.WithConfig("""
            {
              "peft_type": "LORA",
              "r": 4,
              "target_modules": ["c_attn"],
              "shiny_new_option": {"zeta": 1.50, "alpha": [1, 2e3, -0], "s": "\u00e9"},
              "another_one": true
            }
            """);

        var c = LoraConfig.Load(dir);
        Assert.Equal(4, c.R);
        Assert.True(c.ExtensionData.ContainsKey("shiny_new_option"));
        Assert.True(c.ExtensionData.ContainsKey("another_one"));
        Assert.Contains(c.Warnings, w => w.Contains("shiny_new_option"));

        c.Save(dir);
        string text = File.ReadAllText(ConfigPath(dir));
        Assert.Contains("\n  \"another_one\": true,\n", text);
        // nested keys sorted, 1.50 → 1.5, 2e3 → 2000.0, -0 → 0, non-ASCII escaped, as Python re-dumps them
        Assert.Contains(
            "\n  \"shiny_new_option\": {\n    \"alpha\": [\n      1,\n      2000.0,\n      0\n    ],\n    \"s\": \"\\u00e9\",\n    \"zeta\": 1.5\n  },\n",
            text);
        Assert.True(LoraConfig.Load(dir).ExtensionData.ContainsKey("shiny_new_option"));
    }

    [Fact]
    public void OlderPeftConfig_WithFewerFields_LoadsWithDefaults()
    {
        // the shape PEFT 0.6-era save_pretrained wrote: no peft_version, no use_dora, target_modules in set order
        var c = LoraConfig.FromJson("""
            {
              "auto_mapping": null,
              "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
              "bias": "none",
              "fan_in_fan_out": false,
              "inference_mode": true,
              "init_lora_weights": true,
              "layers_pattern": null,
              "layers_to_transform": null,
              "lora_alpha": 16,
              "lora_dropout": 0.1,
              "modules_to_save": null,
              "peft_type": "LORA",
              "r": 64,
              "revision": null,
              "target_modules": ["v_proj", "q_proj"],
              "task_type": "CAUSAL_LM"
            }
            """);
        Assert.Equal(64, c.R);
        Assert.Equal(0.1, c.LoraDropout);
        Assert.False(c.UseDora);
        Assert.Equal(PeftConfig.MatchedPeftVersion, c.PeftVersion); // PEFT fills a missing version with its own
        Assert.Empty(c.ExtensionData);
        string json = c.ToJson();
        Assert.Contains("\n  \"use_dora\": false,\n", json);
        Assert.Contains("\n  \"target_modules\": [\n    \"q_proj\",\n    \"v_proj\"\n  ],\n", json);
    }

    [Theory]
    [InlineData("\"r\": \"8\"", "'r'", "must be an integer, got a string (\"8\")")]
    [InlineData("\"r\": 8.5", "'r'", "must be an integer, got the number 8.5")]
    [InlineData("\"r\": null", "'r'", "must be an integer, got null")]
    [InlineData("\"lora_dropout\": \"0.1\"", "'lora_dropout'", "must be a number")]
    [InlineData("\"use_dora\": 1", "'use_dora'", "must be true or false, got the number 1")]
    [InlineData("\"target_modules\": 5", "'target_modules'", "must be a list of module names or a regex string or null")]
    [InlineData("\"target_modules\": [\"q\", 3]", "'target_modules' entry [1]", "must be a string")]
    [InlineData("\"rank_pattern\": {\"q_proj\": \"x\"}", "'rank_pattern' entry \"q_proj\"", "must be an integer")]
    [InlineData("\"init_lora_weights\": 0", "'init_lora_weights'", "must be true, false or an initialisation method name")]
    [InlineData("\"layers_to_transform\": \"3\"", "'layers_to_transform'", "must be an integer or a list of integers")]
    [InlineData("\"layer_replication\": [[0, 4, 5]]", "'layer_replication' entry [0]", "[start, end]")]
    [InlineData("\"eva_config\": [1]", "'eva_config'", "must be an object or null, got a list")]
    [InlineData("\"peft_type\": 7", "'peft_type'", "must be a string")]
    public void WrongType_IsOneLineNamingFileFieldAndExpectation(string field, string fieldName, string expected)
    {
        using var tmp = new TempDir();
        string dir = tmp.WithConfig($"{{\"peft_type\": \"LORA\", \"target_modules\": [\"c_attn\"], {field}}}".Replace(
            "\"target_modules\": [\"c_attn\"], \"target_modules\"", "\"target_modules\""));
        var ex = Assert.Throws<PeftSharpException>(() => LoraConfig.Load(dir));
        Assert.StartsWith(ConfigPath(dir) + ": ", ex.Message);
        Assert.Contains("field " + fieldName, ex.Message);
        Assert.Contains(expected, ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void OtherPeftType_IsRejectedByName_UnlessAllowed()
    {
        using var tmp = new TempDir();
        string dir = tmp.WithConfig("{\"peft_type\": \"ADALORA\", \"r\": 4, \"target_modules\": [\"q\"], \"target_r\": 2}");
        var ex = Assert.Throws<PeftSharpException>(() => LoraConfig.Load(dir));
        Assert.Contains("ADALORA", ex.Message);
        Assert.Contains("'peft_type'", ex.Message);
        Assert.Equal("ADALORA", PeftConfig.ReadPeftType(dir));

        var c = LoraConfig.Load(dir, allowOtherPeftType: true);
        Assert.Equal("ADALORA", c.PeftType);
        Assert.Equal(4, c.R);
        Assert.True(c.ExtensionData.ContainsKey("target_r"));
        Assert.Contains("\n  \"peft_type\": \"ADALORA\",\n", c.ToJson());
    }

    [Fact]
    public void MissingOrBrokenFile_GivesOneLineErrors()
    {
        using var tmp = new TempDir();
        var missing = Assert.Throws<PeftSharpException>(() => LoraConfig.Load(tmp.File("nope")));
        Assert.Contains("adapter_config.json", missing.Message);

        string dir = tmp.WithConfig("{\"peft_type\": \"LORA\",}");
        var broken = Assert.Throws<PeftSharpException>(() => LoraConfig.Load(dir));
        Assert.StartsWith(ConfigPath(dir) + ": not valid JSON", broken.Message);
        Assert.DoesNotContain('\n', broken.Message);

        string list = tmp.WithConfig("[1, 2]", "list");
        Assert.Contains("JSON object", Assert.Throws<PeftSharpException>(() => LoraConfig.Load(list)).Message);
    }

    [Fact]
    public void InvalidTaskType_IsRejected()
    {
        var ex = Assert.Throws<PeftSharpException>(() =>
            LoraConfig.FromJson("{\"peft_type\": \"LORA\", \"task_type\": \"CAUSAL\", \"target_modules\": [\"q\"]}"));
        Assert.Contains("'task_type'", ex.Message);
        Assert.Contains("CAUSAL_LM", ex.Message);
    }

    [Fact]
    public void Numbers_ArePrintedAsPythonPrintsThem()
    {
        var c = new LoraConfig { TargetModules = new[] { "q" }, LoraDropout = 1e-5, LoraAlpha = 16 * Math.Sqrt(2) };
        string json = c.ToJson();
        Assert.Contains("\n  \"lora_dropout\": 1e-05,\n", json);
        Assert.Contains("\n  \"lora_alpha\": 22.627416997969522,\n", json);

        // a literal keeps its Python type while unchanged: 16.0 stays a float, 0 stays an int
        var read = LoraConfig.FromJson("{\"peft_type\": \"LORA\", \"target_modules\": [\"q\"], \"lora_alpha\": 16.0, \"lora_dropout\": 0, \"alpha_pattern\": {\"a\": 4.0, \"b\": 4}}");
        json = read.ToJson();
        Assert.Contains("\n  \"lora_alpha\": 16.0,\n", json);
        Assert.Contains("\n  \"lora_dropout\": 0,\n", json);
        Assert.Contains("\n  \"alpha_pattern\": {\n    \"a\": 4.0,\n    \"b\": 4\n  },\n", json);
        read.LoraAlpha = 32;
        read.LoraDropout = 0.25;
        json = read.ToJson();
        Assert.Contains("\n  \"lora_alpha\": 32,\n", json);
        Assert.Contains("\n  \"lora_dropout\": 0.25,\n", json);
    }

    [Fact]
    public void NonAscii_IsEscapedAsPythonEnsureAscii()
    {
        var c = new LoraConfig
        {
            TargetModules = new[] { "q" },
            BaseModelNameOrPath = "modèle/😀\"\\\n\u0001\u007f",
        };
        Assert.Contains("\n  \"base_model_name_or_path\": \"mod\\u00e8le/\\ud83d\\ude00\\\"\\\\\\n\\u0001\\u007f\",\n", c.ToJson());
    }

    [Fact]
    public void PostInit_FollowsPeft()
    {
        // init "eva" without eva_config: PEFT fills in EvaConfig()
        string eva = new LoraConfig { TargetModules = new[] { "q" }, InitLoraWeights = InitLoraWeights.Eva }.ToJson();
        Assert.Contains(
            "\n  \"eva_config\": {\n    \"adjust_scaling_factors\": true,\n    \"label_mask_value\": -100,\n    \"rho\": 2.0,\n    \"tau\": 0.99,\n    \"use_label_mask\": true,\n    \"whiten\": false\n  },\n",
            eva);

        // loftq_config without init "loftq" is dropped with a warning
        var loftq = LoraConfig.FromJson("{\"peft_type\": \"LORA\", \"target_modules\": [\"q\"], \"loftq_config\": {\"loftq_bits\": 4, \"loftq_iter\": 1}}");
        Assert.Empty(loftq.LoftqConfig!);
        Assert.Contains(loftq.Warnings, w => w.Contains("loftq_config"));

        // init "loftq" needs loftq_config
        Assert.Contains("'loftq_config'", Assert.Throws<PeftSharpException>(() =>
            new LoraConfig { TargetModules = new[] { "q" }, InitLoraWeights = InitLoraWeights.Loftq }.ToJson()).Message);

        // layers_* with a regex target, and layers_pattern without layers_to_transform
        Assert.Contains("layers_to_transform", Assert.Throws<PeftSharpException>(() => LoraConfig.FromJson(
            "{\"peft_type\": \"LORA\", \"target_modules\": \".*q\", \"layers_to_transform\": 1}")).Message);
        Assert.Contains("layers_pattern", Assert.Throws<PeftSharpException>(() => LoraConfig.FromJson(
            "{\"peft_type\": \"LORA\", \"target_modules\": [\"q\"], \"layers_pattern\": \"h\"}")).Message);
        Assert.Contains("lora_bias", Assert.Throws<PeftSharpException>(() =>
            new LoraConfig { TargetModules = new[] { "q" }, LoraBias = true, InitLoraWeights = "pissa" }.ToJson()).Message);

        // runtime_config is never read nor written
        var rt = LoraConfig.FromJson("{\"peft_type\": \"LORA\", \"target_modules\": [\"q\"], \"runtime_config\": {\"ephemeral_gpu_offload\": true}}");
        Assert.Empty(rt.ExtensionData);
        Assert.DoesNotContain("runtime_config", rt.ToJson());

        // ToJson does not change the config it writes
        var c = new LoraConfig { TargetModules = new[] { "q" }, InitLoraWeights = InitLoraWeights.Eva };
        c.ToJson();
        Assert.Null(c.EvaConfig);
        Assert.NotEmpty(c.Normalize());
        Assert.NotNull(c.EvaConfig);
    }

    [Fact]
    public void SingleOrListForms_ArePreserved()
    {
        var c = LoraConfig.FromJson("""{"peft_type": "LORA", "target_modules": ["c_attn"], "layers_to_transform": 3, "layers_pattern": ["h", "layers"], "trainable_token_indices": [5, 6], "init_lora_weights": "gaussian"}""");
        Assert.True(c.LayersToTransform!.IsSingle);
        Assert.Equal(3, c.LayersToTransform.Items[0]);
        Assert.False(c.LayersPattern!.IsSingle);
        Assert.Equal([5, 6], c.TrainableTokenIndices!.Indices!);
        Assert.Equal(InitLoraWeights.Gaussian, c.InitLoraWeights);
        string json = c.ToJson();
        Assert.Contains("\n  \"layers_to_transform\": 3,\n", json);
        Assert.Contains("\n  \"layers_pattern\": [\n    \"h\",\n    \"layers\"\n  ],\n", json);
        Assert.Contains("\n  \"trainable_token_indices\": [\n    5,\n    6\n  ],\n", json);
        Assert.Contains("\n  \"init_lora_weights\": \"gaussian\",\n", json);

        var regex = LoraConfig.FromJson("""{"peft_type": "LORA", "target_modules": "all-linear", "init_lora_weights": false}""");
        Assert.True(regex.TargetModules!.IsAllLinear);
        Assert.Equal(InitLoraWeights.False, regex.InitLoraWeights);
        Assert.Contains("\n  \"target_modules\": \"all-linear\",\n", regex.ToJson());
    }

    [Fact]
    public void DuplicateKeys_LastValueWins_AsInPythonJsonLoad()
    {
        var c = LoraConfig.FromJson("{\"peft_type\": \"LORA\", \"target_modules\": [\"q\"], \"r\": 4, \"r\": 12, \"rank_pattern\": {\"a\": 1, \"b\": 2, \"a\": 3}}");
        Assert.Equal(12, c.R);
        Assert.Equal(["a", "b"], c.RankPattern!.Keys);
        Assert.Equal(3, c.RankPattern["a"]);
    }
}
