using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Tuners.Prompts;

namespace PeftSharp.Tuners.Attempt;

/// <summary>
/// PeftSharp's config for ATTEMPT (Asai et al. 2022, <c>peft_type: "ATTEMPT"</c>; PEFT has no such method): a new
/// target prompt plus an instance-wise attention over frozen source prompts. For input embeddings X of one sequence:
/// x = max-pool of X over its tokens; h = LayerNorm(W_up · SiLU(W_down · x)); with P_1 … P_K the sources and
/// P_{K+1} the target, a = softmax_j(h · maxpool(P_j) / temperature); the prompt is P_target + Σ_j a_j · P_j.
/// </summary>
public sealed class AttemptConfig : PromptLearningConfig
{
    /// <summary>The peft_type value.</summary>
    public const string Type = "ATTEMPT";

    /// <summary>An ATTEMPT config with the defaults.</summary>
    public AttemptConfig() : base(Type) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => Type;

    /// <summary>The source prompt folders (soft-prompt adapters with <c>prompt_embeddings</c> [N, token_dim]) read when the adapter is created; recorded for information in saved adapters, which hold the prompts themselves.</summary>
    [JsonPropertyName("source_prompts")]
    public IReadOnlyList<string>? SourcePrompts { get; set; }

    /// <summary>Number of source prompts K (default: the length of source_prompts).</summary>
    [JsonPropertyName("num_sources")]
    public int? NumSources { get; set; }

    /// <summary>Width of the attention's down projection (ATTEMPT's 300).</summary>
    [JsonPropertyName("attn_hidden_size")]
    public int AttnHiddenSize { get; set; } = 300;

    /// <summary>Softmax temperature; null: token_dim · e, as ATTEMPT's <c>model_dim · exp(1)</c>.</summary>
    [JsonPropertyName("temperature")]
    public double? Temperature { get; set; }

    /// <summary>The target prompt's start: "ZERO" (default: the prompt starts as the attention mixture of the sources) or "RANDOM" (N(0, 1), as prompt tuning).</summary>
    [JsonPropertyName("target_init")]
    public string TargetInit { get; set; } = "ZERO";

    /// <summary>The temperature in use (the given one, or token_dim · e).</summary>
    [JsonIgnore]
    public double EffectiveTemperature => Temperature ?? TokenDim!.Value * Math.E;

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        NumSources ??= SourcePrompts?.Count;
        if (NumSources is null or < 1) throw Invalid("num_sources", "is missing or below 1; expected at least one source prompt (source_prompts)");
        if (SourcePrompts is { Count: > 0 } s && s.Count != NumSources)
            throw Invalid("num_sources", $"is {NumSources} but source_prompts lists {s.Count} folders");
        if (AttnHiddenSize < 1) throw Invalid("attn_hidden_size", $"is {AttnHiddenSize}; expected a positive width");
        if (Temperature is double t && !(t > 0)) throw Invalid("temperature", $"is {t}; expected a positive temperature");
        if (TargetInit is not ("ZERO" or "RANDOM")) throw Invalid("target_init", $"is \"{TargetInit}\"; expected ZERO or RANDOM");
    }

    /// <summary>Reads an ATTEMPT adapter folder's <c>adapter_config.json</c>.</summary>
    public static AttemptConfig Load(string adapterDir) => LoadFromDirectory<AttemptConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static AttemptConfig FromJson(string json, string sourceName = ConfigFileName) => ParseJson<AttemptConfig>(json, sourceName, false);

    /// <summary>Also: token_dim must be the model's hidden size (the prompt enters the input embeddings).</summary>
    public override void Prepare(ModelConfig model, string source)
    {
        base.Prepare(model, source);
        CheckTokenDimIsHidden(model, source);
    }
}
