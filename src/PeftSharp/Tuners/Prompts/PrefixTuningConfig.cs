using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Prompts;

/// <summary>
/// PEFT's <c>PrefixTuningConfig</c> (<c>peft_type: "PREFIX_TUNING"</c>; Li &amp; Liang 2021, and P-tuning v2's deep
/// prompts): trainable keys and values in front of every layer's attention. With <c>prefix_projection</c> a two-layer
/// MLP (token_dim → encoder_hidden_size → num_layers·2·token_dim, tanh) produces them during training.
/// </summary>
public sealed class PrefixTuningConfig : PromptLearningConfig
{
    /// <summary>A prefix-tuning config with PEFT's defaults (peft_type PREFIX_TUNING).</summary>
    public PrefixTuningConfig() : base(PromptPeftTypes.PrefixTuning) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => PromptPeftTypes.PrefixTuning;

    /// <summary>Hidden width of the projection MLP; null: token_dim.</summary>
    [JsonPropertyName("encoder_hidden_size")]
    public int? EncoderHiddenSize { get; set; }

    /// <summary>Whether an MLP produces the prefixes during training. Default false.</summary>
    [JsonPropertyName("prefix_projection")]
    public bool PrefixProjection { get; set; }

    /// <summary>null: random init (torch defaults); "zero": the prefix (or the projection's last layer) starts at zero.</summary>
    [JsonPropertyName("init_weights")]
    public string? InitWeights { get; set; }

    /// <summary>Reads a prefix-tuning adapter folder's <c>adapter_config.json</c>.</summary>
    public static PrefixTuningConfig Load(string adapterDir) => LoadFromDirectory<PrefixTuningConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static PrefixTuningConfig FromJson(string json, string sourceName = ConfigFileName) => ParseJson<PrefixTuningConfig>(json, sourceName, false);

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (InitWeights is not null and not "zero") throw Invalid("init_weights", $"is \"{InitWeights}\"; expected \"zero\" or null");
        if (EncoderHiddenSize is int h && h <= 0) throw Invalid("encoder_hidden_size", $"is {h}; expected a positive width");
    }

    /// <summary>
    /// As PEFT: for models whose config has num_key_value_heads (the Llama family) token_dim becomes
    /// key/value heads × head_dim and num_attention_heads the key/value heads; GPT-2 keeps n_embd and n_head.
    /// </summary>
    public override void Prepare(ModelConfig model, string source)
    {
        bool fresh = TokenDim is null && NumAttentionHeads is null;
        base.Prepare(model, source);
        if (fresh && !model.IsGpt2)
        {
            TokenDim = model.HeadDim * model.KeyValueHeads;
            NumAttentionHeads = model.KeyValueHeads;
        }
        EncoderHiddenSize ??= TokenDim;
        int kvDim = model.HeadDim * model.KeyValueHeads;
        if (NumLayers != model.Layers)
            throw new PeftSharpException($"{source}: field 'num_layers' is {NumLayers} but this {model.ModelType} model has {model.Layers} layers");
        if (NumAttentionHeads != model.KeyValueHeads || TokenDim != kvDim)
            throw new PeftSharpException(
                $"{source}: fields 'num_attention_heads' {NumAttentionHeads} and 'token_dim' {TokenDim} do not fit this {model.ModelType} model's keys/values ({model.KeyValueHeads} key/value heads × head_dim {model.HeadDim} = {kvDim})");
    }
}
