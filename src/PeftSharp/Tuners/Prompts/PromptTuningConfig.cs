using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Prompts;

/// <summary>The values of PEFT's <c>PromptTuningInit</c>.</summary>
public static class PromptTuningInit
{
    /// <summary>The embeddings of <c>prompt_tuning_init_text</c>, tokenized and repeated or cut to the virtual-token count.</summary>
    public const string Text = "TEXT";
    /// <summary>The embeddings of token ids drawn uniformly from the vocabulary.</summary>
    public const string SampleVocab = "SAMPLE_VOCAB";
    /// <summary>torch.nn.Embedding's default: N(0, 1) (the default).</summary>
    public const string Random = "RANDOM";

    /// <summary>Every prompt_tuning_init value.</summary>
    public static IReadOnlyList<string> All { get; } = [Text, SampleVocab, Random];
}

/// <summary>
/// PEFT's <c>PromptTuningConfig</c> (<c>peft_type: "PROMPT_TUNING"</c>, Lester et al. 2021): <c>num_virtual_tokens</c>
/// trainable embeddings put in front of the input embeddings.
/// </summary>
public class PromptTuningConfig : PromptLearningConfig
{
    /// <summary>A prompt-tuning config with PEFT's defaults (peft_type PROMPT_TUNING).</summary>
    public PromptTuningConfig() : base(PromptPeftTypes.PromptTuning) { }

    /// <summary>For configs deriving from prompt tuning as in PEFT (multitask prompt tuning): sets their peft_type.</summary>
    protected PromptTuningConfig(string peftType) : base(peftType) { }

    /// <summary>The accepted prompt_tuning_init values (<see cref="PromptTuningInit.All"/>; derived configs have their own).</summary>
    [JsonIgnore]
    protected virtual IReadOnlyList<string> InitModes => PromptTuningInit.All;

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => PromptPeftTypes.PromptTuning;

    /// <summary>RANDOM (default), TEXT or SAMPLE_VOCAB (<see cref="PromptTuningInit"/>).</summary>
    [JsonPropertyName("prompt_tuning_init")]
    public string PromptTuningInitMode { get; set; } = PromptTuningInit.Random;

    /// <summary>The text whose token embeddings initialise the prompt (TEXT only).</summary>
    [JsonPropertyName("prompt_tuning_init_text")]
    public string? PromptTuningInitText { get; set; }

    /// <summary>The tokenizer for TEXT: a local model folder holding tokenizer.json (PeftSharp reads local folders only).</summary>
    [JsonPropertyName("tokenizer_name_or_path")]
    public string? TokenizerNameOrPath { get; set; }

    /// <summary>Keyword arguments of AutoTokenizer.from_pretrained (TEXT only); kept and written back.</summary>
    [JsonPropertyName("tokenizer_kwargs")]
    public System.Text.Json.Nodes.JsonObject? TokenizerKwargs { get; set; }

    /// <summary>Reads a prompt-tuning adapter folder's <c>adapter_config.json</c>.</summary>
    public static PromptTuningConfig Load(string adapterDir) => LoadFromDirectory<PromptTuningConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static PromptTuningConfig FromJson(string json, string sourceName = ConfigFileName) => ParseJson<PromptTuningConfig>(json, sourceName, false);

    /// <summary>PEFT's <c>PromptTuningConfig.__post_init__</c>.</summary>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (!InitModes.Contains(PromptTuningInitMode))
            throw Invalid("prompt_tuning_init", $"is \"{PromptTuningInitMode}\"; expected one of {string.Join(", ", InitModes)}");
        if (PromptTuningInitMode == PromptTuningInit.Text && string.IsNullOrEmpty(TokenizerNameOrPath))
            throw Invalid("tokenizer_name_or_path", "is missing; prompt_tuning_init TEXT needs the tokenizer (a model folder)");
        if (PromptTuningInitMode == PromptTuningInit.Text && PromptTuningInitText is null)
            throw Invalid("prompt_tuning_init_text", "is missing; prompt_tuning_init TEXT needs the text");
        if (TokenizerKwargs is { Count: > 0 } && PromptTuningInitMode != PromptTuningInit.Text)
            throw Invalid("tokenizer_kwargs", "is only valid with prompt_tuning_init TEXT");
    }

    /// <summary>Also: TEXT without tokenizer_name_or_path reads the tokenizer of the base model's folder.</summary>
    public override void Prepare(ModelConfig model, string source)
    {
        if (PromptTuningInitMode == PromptTuningInit.Text && string.IsNullOrEmpty(TokenizerNameOrPath) && model.SourcePath is string path)
            TokenizerNameOrPath = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path));
        base.Prepare(model, source);
        CheckTokenDimIsHidden(model, source);
    }
}
