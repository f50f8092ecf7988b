using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Prompts;

/// <summary>
/// PEFT's <c>PromptEncoderConfig</c> (<c>peft_type: "P_TUNING"</c>, Liu et al. 2021): virtual-token embeddings produced
/// by a prompt encoder (an MLP, or a bidirectional LSTM followed by an MLP) during training; saved as the encoder's output.
/// </summary>
public sealed class PromptEncoderConfig : PromptLearningConfig
{
    /// <summary>A P-tuning config with PEFT's defaults (peft_type P_TUNING).</summary>
    public PromptEncoderConfig() : base(PromptPeftTypes.PTuning) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => PromptPeftTypes.PTuning;

    /// <summary>"MLP" (default) or "LSTM".</summary>
    [JsonPropertyName("encoder_reparameterization_type")]
    public string EncoderReparameterizationType { get; set; } = "MLP";

    /// <summary>Hidden width of the encoder; null: token_dim.</summary>
    [JsonPropertyName("encoder_hidden_size")]
    public int? EncoderHiddenSize { get; set; }

    /// <summary>LSTM layers (the MLP always has 3 linear layers; PEFT warns when this is changed for MLP). Default 2.</summary>
    [JsonPropertyName("encoder_num_layers")]
    public int EncoderNumLayers { get; set; } = 2;

    /// <summary>Dropout between LSTM layers. Default 0.0.</summary>
    [JsonPropertyName("encoder_dropout")]
    [PythonFloat]
    public double EncoderDropout { get; set; }

    /// <summary>Reads a P-tuning adapter folder's <c>adapter_config.json</c>.</summary>
    public static PromptEncoderConfig Load(string adapterDir) => LoadFromDirectory<PromptEncoderConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static PromptEncoderConfig FromJson(string json, string sourceName = ConfigFileName) => ParseJson<PromptEncoderConfig>(json, sourceName, false);

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (EncoderReparameterizationType is not ("MLP" or "LSTM"))
            throw Invalid("encoder_reparameterization_type", $"is \"{EncoderReparameterizationType}\"; expected MLP or LSTM");
        if (EncoderHiddenSize is int h && h <= 0) throw Invalid("encoder_hidden_size", $"is {h}; expected a positive width");
        if (EncoderNumLayers <= 0) throw Invalid("encoder_num_layers", $"is {EncoderNumLayers}; expected a positive layer count");
        if (EncoderReparameterizationType == "MLP" && EncoderNumLayers != 2)
            warnings.Add("for MLP, the argument `encoder_num_layers` is ignored. Exactly 2 MLP layers are used.");
    }

    /// <inheritdoc/>
    public override void Prepare(ModelConfig model, string source)
    {
        base.Prepare(model, source);
        CheckTokenDimIsHidden(model, source);
        EncoderHiddenSize ??= TokenDim;
    }
}
