using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Prompts;

/// <summary>
/// PEFT's <c>PromptLearningConfig</c>: the fields every soft-prompt method shares (prompt tuning, P-tuning, prefix
/// tuning). The model-size fields may be left null; <see cref="Prepare"/> fills them from the base model as PEFT's
/// <c>_prepare_prompt_learning_config</c> does.
/// </summary>
public abstract class PromptLearningConfig : PeftConfig
{
    /// <summary>Sets the peft_type; called by each prompt-learning config class.</summary>
    protected PromptLearningConfig(string peftType) : base(peftType) { }

    /// <summary>Number of virtual tokens (prompt positions or prefix key/value positions); must be positive.</summary>
    [JsonPropertyName("num_virtual_tokens")]
    public int? NumVirtualTokens { get; set; }

    /// <summary>Width of one virtual token: the model's hidden size (prefix tuning with GQA: key/value heads × head_dim).</summary>
    [JsonPropertyName("token_dim")]
    public int? TokenDim { get; set; }

    /// <summary>1 for decoder-only models (2 for encoder-decoder models, which PeftSharp does not run).</summary>
    [JsonPropertyName("num_transformer_submodules")]
    public int? NumTransformerSubmodules { get; set; }

    /// <summary>The model's attention heads (prefix tuning with GQA: its key/value heads).</summary>
    [JsonPropertyName("num_attention_heads")]
    public int? NumAttentionHeads { get; set; }

    /// <summary>The model's decoder layers.</summary>
    [JsonPropertyName("num_layers")]
    public int? NumLayers { get; set; }

    /// <summary>Modules besides the prompt that are trained in full and saved (not supported for soft prompts here).</summary>
    [JsonPropertyName("modules_to_save")]
    public IReadOnlyList<string>? ModulesToSave { get; set; }

    /// <summary>Virtual tokens × transformer submodules: the rows of the saved <c>prompt_embeddings</c> (prompt tuning, P-tuning).</summary>
    [JsonIgnore]
    public int TotalVirtualTokens => (NumVirtualTokens ?? 0) * (NumTransformerSubmodules ?? 1);

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (NumVirtualTokens is int n && n <= 0) throw Invalid("num_virtual_tokens", $"is {n}; expected a positive number of virtual tokens");
        if (TokenDim is int d && d <= 0) throw Invalid("token_dim", $"is {d}; expected a positive width");
        if (NumLayers is int l && l <= 0) throw Invalid("num_layers", $"is {l}; expected a positive layer count");
        if (NumAttentionHeads is int h && h <= 0) throw Invalid("num_attention_heads", $"is {h}; expected a positive head count");
        if (NumTransformerSubmodules is int s && s != 1 && s != 2) throw Invalid("num_transformer_submodules", $"is {s}; expected 1 (decoder-only) or 2 (encoder-decoder)");
    }

    /// <summary>
    /// PEFT's <c>_prepare_prompt_learning_config</c> plus the submodule default of <c>PeftModel.add_adapter</c>: fills
    /// num_layers, token_dim, num_attention_heads and num_transformer_submodules from the model when null, then checks
    /// that what is set fits the model. Errors name <paramref name="source"/>.
    /// </summary>
    public virtual void Prepare(ModelConfig model, string source)
    {
        if (NumVirtualTokens is null) throw new PeftSharpException($"{source}: field 'num_virtual_tokens' is missing; expected a positive number of virtual tokens");
        if (NumVirtualTokens <= 0) throw new PeftSharpException($"{source}: field 'num_virtual_tokens' is {NumVirtualTokens}; expected a positive number of virtual tokens");
        NumLayers ??= model.Layers;
        TokenDim ??= model.Hidden;
        NumAttentionHeads ??= model.Heads;
        NumTransformerSubmodules ??= TaskType == TaskTypes.Seq2SeqLm ? 2 : 1;
        if (NumTransformerSubmodules != 1)
            throw new PeftSharpException($"{source}: field 'num_transformer_submodules' is {NumTransformerSubmodules}; a decoder-only {model.ModelType} model has 1");
        if (ModulesToSave is { Count: > 0 })
            throw new PeftSharpException($"{source}: field 'modules_to_save' is not supported with soft prompts in PeftSharp");
    }

    /// <summary>Checks that token_dim is the model's hidden size (the virtual tokens enter the input embeddings).</summary>
    protected void CheckTokenDimIsHidden(ModelConfig model, string source)
    {
        if (TokenDim != model.Hidden)
            throw new PeftSharpException($"{source}: field 'token_dim' is {TokenDim} but this {model.ModelType} model's hidden size is {model.Hidden}");
    }
}
