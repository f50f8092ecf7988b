using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

using PeftSharp.Peft;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// PEFT's <c>LoraConfig</c>: every field, with PEFT's JSON name and default, read from and written to
/// adapter_config.json byte for byte as Python PEFT does (matched: PEFT 0.20.1.dev0, main at commit 5d602fd).
/// </summary>
public class LoraConfig : PeftConfig
{
    /// <summary>A LoRA config with PEFT's defaults (peft_type LORA).</summary>
    public LoraConfig() : base(PeftTypes.Lora) { }

    /// <summary>For LoRA-shaped methods (PEFT's AdaLoraConfig derives from LoraConfig): pass the method's peft_type and
    /// override <see cref="ExpectedPeftType"/>; extra fields are properties with [JsonPropertyName].</summary>
    protected LoraConfig(string peftType) : base(peftType) { }

    /// <inheritdoc />
    [JsonIgnore]
    public override string ExpectedPeftType => PeftTypes.Lora;

    /// <summary>LoRA rank (attention dimension). Default 8.</summary>
    [JsonPropertyName("r")]
    public int R { get; set; } = 8;

    /// <summary>Modules to adapt: a list of names (exact or dot-suffix match), a regex (full match), or
    /// <c>"all-linear"</c>. Null means "use the model type's default" (<see cref="LoraDefaults"/>).</summary>
    [JsonPropertyName("target_modules")]
    public TargetModules? TargetModules { get; set; }

    /// <summary>Modules never to adapt, with the same matching rules as <see cref="TargetModules"/>.</summary>
    [JsonPropertyName("exclude_modules")]
    public TargetModules? ExcludeModules { get; set; }

    /// <summary>LoRA alpha: scaling = alpha / r (or alpha / sqrt(r) with rsLoRA). Default 8. An int in PEFT's
    /// signature, but it may hold a float (PEFT itself multiplies it by sqrt(2) for some conversions).</summary>
    [JsonPropertyName("lora_alpha")]
    public double LoraAlpha { get; set; } = 8;

    /// <summary>Dropout probability on the LoRA input. Default 0.0.</summary>
    [JsonPropertyName("lora_dropout")]
    [PythonFloat]
    public double LoraDropout { get; set; }

    /// <summary>True when the base layer stores its weight as (fan_in, fan_out), like GPT-2's Conv1D.</summary>
    [JsonPropertyName("fan_in_fan_out")]
    public bool FanInFanOut { get; set; }

    /// <summary>Which biases are trained: <c>"none"</c> (default), <c>"all"</c> or <c>"lora_only"</c>.</summary>
    [JsonPropertyName("bias")]
    public string Bias { get; set; } = "none";

    /// <summary>Rank-stabilised LoRA: scaling = alpha / sqrt(r) instead of alpha / r.</summary>
    [JsonPropertyName("use_rslora")]
    public bool UseRslora { get; set; }

    /// <summary>Modules besides the LoRA layers that are trained in full and saved (e.g. a classifier head).</summary>
    [JsonPropertyName("modules_to_save")]
    public IReadOnlyList<string>? ModulesToSave { get; set; }

    /// <summary>How the LoRA weights are initialised: true (default), false, or a method name.</summary>
    [JsonPropertyName("init_lora_weights")]
    public InitLoraWeights InitLoraWeights { get; set; } = InitLoraWeights.True;

    /// <summary>Only adapt layers with these indexes (one index or a list); needs list-valued target_modules.</summary>
    [JsonPropertyName("layers_to_transform")]
    public OneOrMany<int>? LayersToTransform { get; set; }

    /// <summary>Name(s) of the layer list in module paths (e.g. <c>"layers"</c>, <c>"h"</c>), used with layers_to_transform.</summary>
    [JsonPropertyName("layers_pattern")]
    public OneOrMany<string>? LayersPattern { get; set; }

    /// <summary>Per-module ranks: key (a regex matched against a dot-suffix of the module path) → rank. The first
    /// matching key in this dictionary's order wins.</summary>
    [JsonPropertyName("rank_pattern")]
    public OrderedDictionary<string, int>? RankPattern { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Per-module alphas, matched like <see cref="RankPattern"/>.</summary>
    [JsonPropertyName("alpha_pattern")]
    public OrderedDictionary<string, double>? AlphaPattern { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Megatron TransformerConfig for parallel linear layers (kept as given).</summary>
    [JsonPropertyName("megatron_config")]
    public JsonObject? MegatronConfig { get; set; }

    /// <summary>The Megatron core module name. Default <c>"megatron.core"</c>.</summary>
    [JsonPropertyName("megatron_core")]
    public string? MegatronCore { get; set; } = "megatron.core";

    /// <summary>Token indices of the embedding to train selectively (a list, or per embedding module).</summary>
    [JsonPropertyName("trainable_token_indices")]
    public TrainableTokenIndices? TrainableTokenIndices { get; set; }

    /// <summary>LoftQConfig as an object (see <see cref="LoraSubConfigs.LoftQ"/>); default empty. Only kept when
    /// init_lora_weights is "loftq".</summary>
    [JsonPropertyName("loftq_config")]
    public JsonObject? LoftqConfig { get; set; } = new();

    /// <summary>EvaConfig (see <see cref="LoraSubConfigs.Eva"/>); filled with defaults when init_lora_weights is "eva".</summary>
    [JsonPropertyName("eva_config")]
    public JsonObject? EvaConfig { get; set; }

    /// <summary>CordaConfig (see <see cref="LoraSubConfigs.Corda"/>); filled with defaults when init_lora_weights is "corda".</summary>
    [JsonPropertyName("corda_config")]
    public JsonObject? CordaConfig { get; set; }

    /// <summary>LoraGAConfig (see <see cref="LoraSubConfigs.LoraGa"/>).</summary>
    [JsonPropertyName("lora_ga_config")]
    public JsonObject? LoraGaConfig { get; set; }

    /// <summary>Weight-Decomposed Low-Rank Adaptation (DoRA).</summary>
    [JsonPropertyName("use_dora")]
    public bool UseDora { get; set; }

    /// <summary>VeloraConfig (see <see cref="LoraSubConfigs.Velora"/>); missing keys get defaults.</summary>
    [JsonPropertyName("velora_config")]
    public JsonObject? VeloraConfig { get; set; }

    /// <summary>Activated LoRA: the token ids of the invocation string.</summary>
    [JsonPropertyName("alora_invocation_tokens")]
    public IReadOnlyList<int>? AloraInvocationTokens { get; set; }

    /// <summary>Quantization-Aware LoRA (GPTQ only in PEFT).</summary>
    [JsonPropertyName("use_qalora")]
    public bool UseQalora { get; set; }

    /// <summary>QALoRA pooling group size. Default 16.</summary>
    [JsonPropertyName("qalora_group_size")]
    public int QaloraGroupSize { get; set; } = 16;

    /// <summary>
    /// PeftSharp's extension for QA-LoRA, written as <c>qalora_bits</c> (PEFT keeps it as an unknown key): the bits
    /// (2, 3, 4 or 8; default 4) of the group-wise quantization of a full-precision base, which PeftSharp quantizes
    /// itself when the adapter is added (a GPTQ base keeps its own quantization). See docs/qa-lora.md.
    /// </summary>
    [JsonIgnore]
    public int QaloraBits
    {
        get => ExtensionData[QaloraBitsKey] is JsonValue v && v.TryGetValue<int>(out int bits) ? bits : 4;
        set => ExtensionData[QaloraBitsKey] = value;
    }

    /// <summary>The JSON key of <see cref="QaloraBits"/>.</summary>
    public const string QaloraBitsKey = "qalora_bits";

    /// <summary>MontecloraConfig (see <see cref="LoraSubConfigs.Monteclora"/>); missing keys get defaults.</summary>
    [JsonPropertyName("monteclora_config")]
    public JsonObject? MontecloraConfig { get; set; }

    /// <summary>Layer stacking as [start, end) ranges of the original layers.</summary>
    [JsonPropertyName("layer_replication")]
    public IReadOnlyList<LayerRange>? LayerReplication { get; set; }

    /// <summary>Runtime-only settings; never saved (PEFT removes runtime_config in to_dict and ignores it on load).</summary>
    [JsonIgnore]
    public LoraRuntimeConfig RuntimeConfig { get; set; } = new();

    /// <summary>A bias on LoRA's B matrix.</summary>
    [JsonPropertyName("lora_bias")]
    public bool LoraBias { get; set; }

    /// <summary>Parameter names (not modules) to adapt, e.g. MoE expert weights.</summary>
    [JsonPropertyName("target_parameters")]
    public IReadOnlyList<string>? TargetParameters { get; set; }

    /// <summary>BdLoraConfig (see <see cref="LoraSubConfigs.BdLora"/>).</summary>
    [JsonPropertyName("use_bdlora")]
    public JsonObject? UseBdlora { get; set; }

    /// <summary>ArrowConfig (see <see cref="LoraSubConfigs.Arrow"/>).</summary>
    [JsonPropertyName("arrow_config")]
    public JsonObject? ArrowConfig { get; set; }

    /// <summary>KasaConfig (see <see cref="LoraSubConfigs.Kasa"/>); missing keys get defaults.</summary>
    [JsonPropertyName("kasa_config")]
    public JsonObject? KasaConfig { get; set; }

    /// <summary>Tie adapters of tied layers (e.g. embedding and output head).</summary>
    [JsonPropertyName("ensure_weight_tying")]
    public bool EnsureWeightTying { get; set; }

    // ------------------------------------------------------------------ reading

    /// <summary>Reads <c>adapterDir/adapter_config.json</c>. Throws <see cref="PeftSharpException"/> (one line naming
    /// the file and field) for invalid JSON, a wrong type, or a <c>peft_type</c> other than <c>"LORA"</c>.</summary>
    public static LoraConfig Load(string adapterDir) => LoadFromDirectory<LoraConfig>(adapterDir, false);

    /// <summary>As <see cref="Load(string)"/>; with <paramref name="allowOtherPeftType"/> a config of another
    /// LoRA-shaped method (e.g. DyLoRA) is read too and its peft_type kept.</summary>
    public static LoraConfig Load(string adapterDir, bool allowOtherPeftType) =>
        LoadFromDirectory<LoraConfig>(adapterDir, allowOtherPeftType);

    /// <summary>Reads a config from JSON text; <paramref name="sourceName"/> names it in error messages.</summary>
    public static LoraConfig FromJson(string json, string sourceName = ConfigFileName, bool allowOtherPeftType = false) =>
        ParseJson<LoraConfig>(json, sourceName, allowOtherPeftType);

    // ------------------------------------------------------------------ post-init

    /// <summary>PEFT's <c>LoraConfig.__post_init__</c>: sub-config defaults, set semantics of target_modules,
    /// and the checks PEFT raises for.</summary>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        // qalora_bits is PeftSharp's own key (not a field of a newer PEFT).
        warnings.RemoveAll(w => w.StartsWith($"Unexpected field '{QaloraBitsKey}'", StringComparison.Ordinal));
        if (UseQalora)
        {
            if (QaloraGroupSize <= 0) throw Invalid("qalora_group_size", $"must be a positive integer, got {QaloraGroupSize}");
            if (ExtensionData[QaloraBitsKey] is JsonNode b && !(b is JsonValue v && v.TryGetValue<int>(out int bits) && bits is 2 or 3 or 4 or 8))
                throw Invalid(QaloraBitsKey, $"is {b.ToJsonString()}; expected 2, 3, 4 or 8");
            if (UseDora) throw InvalidCombination("use_qalora cannot be combined with use_dora");
        }

        if (MontecloraConfig is not null)
        {
            MontecloraConfig = LoraSubConfigs.WithDefaults(MontecloraConfig, LoraSubConfigs.Monteclora());
            CheckPositive(MontecloraConfig, "monteclora_config", "num_samples");
            CheckPositive(MontecloraConfig, "monteclora_config", "dirichlet_prior");
            CheckPositive(MontecloraConfig, "monteclora_config", "buffer_size");
        }
        // target_modules / exclude_modules are sets in PEFT: TargetModules.FromNames already dropped duplicates.

        if (VeloraConfig is not null)
        {
            VeloraConfig = LoraSubConfigs.WithDefaults(VeloraConfig, LoraSubConfigs.Velora());
            CheckPositive(VeloraConfig, "velora_config", "num_groups");
            CheckPositive(VeloraConfig, "velora_config", "scale");
            string? initType = LoraSubConfigs.String(VeloraConfig, "init_type");
            if (initType is not ("batch_average_once" or "batch_average" or "random"))
                throw Invalid("velora_config", "has an unsupported init_type; expected \"batch_average_once\", \"batch_average\" or \"random\"");
        }

        if (KasaConfig is not null)
        {
            KasaConfig = LoraSubConfigs.WithDefaults(KasaConfig, LoraSubConfigs.Kasa());
            foreach (var key in new[] { "beta", "gamma" })
                if (!(LoraSubConfigs.Number(KasaConfig, key) >= 0))
                    throw Invalid("kasa_config", $"needs a non-negative number for '{key}'");
        }

        bool regexTargets = TargetModules is { IsRegex: true };
        if (regexTargets && LayersToTransform is not null)
            throw InvalidCombination("field 'layers_to_transform' cannot be used when 'target_modules' is a str (regex)");
        if (regexTargets && LayersPattern is not null)
            throw InvalidCombination("field 'layers_pattern' cannot be used when 'target_modules' is a str (regex)");
        if (LayersPatternIsTruthy() && LayersToTransform is null)
            throw InvalidCombination("field 'layers_pattern' is set, so 'layers_to_transform' must be set too");
        if (UseDora && MegatronConfig is { Count: > 0 })
            throw InvalidCombination("DoRA does not support megatron_core; set 'use_dora' to false");

        // init_lora_weights and the sub-configs it needs (the same if/elif chain as PEFT).
        string? init = InitLoraWeights.Method;
        if (init == "loftq")
        {
            if (LoftqConfig is not { Count: > 0 })
                throw InvalidCombination("field 'loftq_config' must be set when 'init_lora_weights' is \"loftq\"");
        }
        else if (LoftqConfig is { Count: > 0 })
        {
            LoftqConfig = new JsonObject();
            warnings.Add("`loftq_config` specified but will be ignored when `init_lora_weights` is not 'loftq'.");
        }
        else if (init == "eva" && EvaConfig is null)
        {
            warnings.Add("`init_lora_weights` is 'eva' but `eva_config` is not specified. Using default EVA config.");
            EvaConfig = LoraSubConfigs.Eva();
        }
        else if (init != "eva" && EvaConfig is not null)
        {
            warnings.Add("`eva_config` specified but will be ignored when `init_lora_weights` is not 'eva'.");
        }
        else if (init == "corda" && CordaConfig is null)
        {
            warnings.Add("`init_lora_weights` is 'corda' but `corda_config` is not specified. Using default CorDA config.");
            CordaConfig = LoraSubConfigs.Corda();
        }
        else if (init != "corda" && CordaConfig is not null)
        {
            warnings.Add("`corda_config` specified but will be ignored when `init_lora_weights` is not 'corda'.");
        }

        if (LoraBias)
        {
            if (InitLoraWeights.IsMethod)
                throw InvalidCombination($"lora_bias=true is only supported with init_lora_weights true or false, got \"{init}\"");
            if (UseDora)
                throw InvalidCombination("lora_bias=true is not supported for DoRA; set 'use_dora' to false");
        }

        if (AloraInvocationTokens is not null && TaskType != TaskTypes.CausalLm)
            warnings.Add("aLoRA is currently only supported for CAUSAL_LM task.");

        if (UseRslora && (RankPattern is { Count: > 0 } || AlphaPattern is { Count: > 0 })
            && (InitLoraWeights.IsPissa || init is "olora" or "corda" or "lora_ga"))
            warnings.Add("Using Rank-Stabilized LoRA with rank_pattern/alpha_pattern and post-training conversion of modified base weights PiSSA/CorDA/OLoRA/LoRA-GA means that you won't be able to restore the initial values of the base weights.");
    }

    private bool LayersPatternIsTruthy() =>
        LayersPattern is not null && (LayersPattern.IsSingle ? LayersPattern.Items[0].Length > 0 : LayersPattern.Items.Count > 0);

    private static void CheckPositive(JsonObject sub, string field, string key)
    {
        if (!(LoraSubConfigs.Number(sub, key) > 0))
            throw Invalid(field, $"needs a positive number for '{key}'");
    }
}
