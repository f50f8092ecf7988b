using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.UniPelt;

/// <summary>
/// The <c>adapter_config.json</c> of a UniPELT adapter (Mao et al. 2022; <c>peft_type: "UNIPELT"</c>, a PeftSharp
/// format: PEFT has no UniPELT). Every decoder layer gets three sub-modules, each behind its own learned gate
/// σ(w·x + b) (see docs/unipelt.md): a LoRA on <c>target_modules</c> (gate from the layer's input row), a key/value
/// prefix of <c>num_virtual_tokens</c> positions (gate per example from the block's input at the first position,
/// scaling the prefix values) and a bottleneck adapter of width <c>bottleneck_size</c> on the MLP's output projection
/// (gate from the adapter's input row). The model-size fields are filled from the base model when left null.
/// </summary>
public sealed class UniPeltConfig : PeftConfig
{
    /// <summary>The peft_type PeftSharp writes for UniPELT adapters.</summary>
    public const string PeftTypeName = "UNIPELT";

    /// <summary>A UniPELT config with PeftSharp's defaults.</summary>
    public UniPeltConfig() : base(PeftTypeName) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => PeftTypeName;

    /// <summary>LoRA rank. Default 8.</summary>
    [JsonPropertyName("r")]
    public int R { get; set; } = 8;

    /// <summary>LoRA's alpha: the LoRA branch is scaled by lora_alpha / r. Default 16.</summary>
    [JsonPropertyName("lora_alpha")]
    [PythonFloat]
    public double LoraAlpha { get; set; } = 16;

    /// <summary>Linear layers that get the gated LoRA (names or dot-suffixes, or a regex). Null: GPT-2 c_attn, Llama family q_proj and v_proj.</summary>
    [JsonPropertyName("target_modules")]
    public TargetModules? TargetModules { get; set; }

    /// <summary>Prefix positions in front of every layer's keys and values. Default 10.</summary>
    [JsonPropertyName("num_virtual_tokens")]
    public int NumVirtualTokens { get; set; } = 10;

    /// <summary>Bottleneck width of the adapter. Default 16.</summary>
    [JsonPropertyName("bottleneck_size")]
    public int BottleneckSize { get; set; } = 16;

    /// <summary>Non-linearity between the adapter's projections: "tanh" (default) or "relu".</summary>
    [JsonPropertyName("non_linearity")]
    public string NonLinearity { get; set; } = "tanh";

    /// <summary>The layer whose output the adapter rewrites (a dot-suffix). Null: GPT-2 mlp.c_proj, Llama family down_proj.</summary>
    [JsonPropertyName("adapter_module")]
    public string? AdapterModule { get; set; }

    /// <summary>Decoder layers (filled from the model).</summary>
    [JsonPropertyName("num_layers")]
    public int? NumLayers { get; set; }

    /// <summary>Width of one prefix key or value row: key/value heads × head_dim (filled from the model).</summary>
    [JsonPropertyName("token_dim")]
    public int? TokenDim { get; set; }

    /// <summary>Key/value heads of the prefix (filled from the model).</summary>
    [JsonPropertyName("num_attention_heads")]
    public int? NumAttentionHeads { get; set; }

    /// <summary>The model's hidden size: the input width of the prefix gate (filled from the model).</summary>
    [JsonPropertyName("hidden_size")]
    public int? HiddenSize { get; set; }

    /// <summary>Reads a UniPELT adapter folder's <c>adapter_config.json</c>.</summary>
    public static UniPeltConfig Load(string adapterDir) => LoadFromDirectory<UniPeltConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static UniPeltConfig FromJson(string json, string sourceName = ConfigFileName) => ParseJson<UniPeltConfig>(json, sourceName, false);

    /// <summary>The LoRA branch's scale, lora_alpha / r.</summary>
    [JsonIgnore]
    public double Scaling => LoraAlpha / R;

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (R < 1) throw Invalid("r", $"is {R}; expected a positive rank");
        if (LoraAlpha <= 0) throw Invalid("lora_alpha", $"is {LoraAlpha}; expected a positive number");
        if (NumVirtualTokens < 1) throw Invalid("num_virtual_tokens", $"is {NumVirtualTokens}; expected a positive number of prefix positions");
        if (BottleneckSize < 1) throw Invalid("bottleneck_size", $"is {BottleneckSize}; expected a positive width");
        if (NonLinearity is not ("tanh" or "relu")) throw Invalid("non_linearity", $"is \"{NonLinearity}\"; expected \"tanh\" or \"relu\"");
        if (TargetModules is { IsAllLinear: true }) throw Invalid("target_modules", "is \"all-linear\"; UniPELT takes a list of names or a regex");
        if (NumLayers is int l && l < 1) throw Invalid("num_layers", $"is {l}; expected a positive layer count");
        if (TokenDim is int d && d < 1) throw Invalid("token_dim", $"is {d}; expected a positive width");
        if (NumAttentionHeads is int h && h < 1) throw Invalid("num_attention_heads", $"is {h}; expected a positive head count");
        if (HiddenSize is int s && s < 1) throw Invalid("hidden_size", $"is {s}; expected a positive width");
    }

    /// <summary>The default LoRA targets for a model type (GPT-2's fused c_attn; q_proj and v_proj otherwise, as PEFT's LoRA).</summary>
    public static IReadOnlyList<string> DefaultTargets(ModelConfig model) => model.IsGpt2 ? ["c_attn"] : ["q_proj", "v_proj"];

    /// <summary>The default adapter position: the MLP's output projection.</summary>
    public static string DefaultAdapterModule(ModelConfig model) => model.IsGpt2 ? "mlp.c_proj" : "mlp.down_proj";

    /// <summary>
    /// Fills the model-size fields and the defaults from <paramref name="model"/>, or checks that given ones fit it;
    /// errors name <paramref name="source"/> and the field.
    /// </summary>
    public void Prepare(ModelConfig model, string source)
    {
        try { Normalize(); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{source}: {e.Message.Replace($"{nameof(UniPeltConfig)}: ", "", StringComparison.Ordinal)}"); }
        int kvDim = model.HeadDim * model.KeyValueHeads;
        NumLayers ??= model.Layers;
        TokenDim ??= kvDim;
        NumAttentionHeads ??= model.KeyValueHeads;
        HiddenSize ??= model.Hidden;
        TargetModules ??= TargetModules.FromNames(DefaultTargets(model));
        AdapterModule ??= DefaultAdapterModule(model);
        if (NumLayers != model.Layers)
            throw new PeftSharpException($"{source}: field 'num_layers' is {NumLayers} but this {model.ModelType} model has {model.Layers} layers");
        if (TokenDim != kvDim || NumAttentionHeads != model.KeyValueHeads)
            throw new PeftSharpException($"{source}: fields 'num_attention_heads' {NumAttentionHeads} and 'token_dim' {TokenDim} do not fit this {model.ModelType} model's keys/values ({model.KeyValueHeads} key/value heads × head_dim {model.HeadDim} = {kvDim})");
        if (HiddenSize != model.Hidden)
            throw new PeftSharpException($"{source}: field 'hidden_size' is {HiddenSize} but this {model.ModelType} model's hidden size is {model.Hidden}");
    }
}
