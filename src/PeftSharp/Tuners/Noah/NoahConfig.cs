using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Noah;

/// <summary>
/// The <c>adapter_config.json</c> of a NOAH supernet (Zhang et al. 2022, neural prompt search; <c>peft_type: "NOAH"</c>,
/// a PeftSharp format). Every decoder layer holds a LoRA on <c>target_modules</c> of the largest rank in
/// <c>lora_ranks</c>, a bottleneck adapter on the MLP's output projection of the largest width in <c>adapter_dims</c> and
/// a deep prompt (a key/value prefix, as P-tuning v2) of the largest length in <c>prompt_lengths</c>. A sub-network
/// takes one value from each list (0 drops that part) and uses the leading rows/columns (docs/unipelt.md#noah).
/// </summary>
public sealed class NoahConfig : PeftConfig
{
    /// <summary>The peft_type PeftSharp writes for NOAH supernets.</summary>
    public const string PeftTypeName = "NOAH";

    /// <summary>A NOAH config with PeftSharp's defaults.</summary>
    public NoahConfig() : base(PeftTypeName) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => PeftTypeName;

    /// <summary>LoRA ranks a sub-network may take (0: no LoRA). Default [0, 2, 4, 8].</summary>
    [JsonPropertyName("lora_ranks")]
    public IReadOnlyList<int> LoraRanks { get; set; } = [0, 2, 4, 8];

    /// <summary>Adapter widths a sub-network may take (0: no adapter). Default [0, 4, 8, 16].</summary>
    [JsonPropertyName("adapter_dims")]
    public IReadOnlyList<int> AdapterDims { get; set; } = [0, 4, 8, 16];

    /// <summary>Prompt (prefix) lengths a sub-network may take (0: no prompt). Default [0, 5, 10].</summary>
    [JsonPropertyName("prompt_lengths")]
    public IReadOnlyList<int> PromptLengths { get; set; } = [0, 5, 10];

    /// <summary>LoRA's alpha: a sub-network of rank r scales its LoRA by lora_alpha / r (as a LoRA folder of rank r). Default 16.</summary>
    [JsonPropertyName("lora_alpha")]
    [PythonFloat]
    public double LoraAlpha { get; set; } = 16;

    /// <summary>Linear layers with a LoRA (names, dot-suffixes or a regex). Null: GPT-2 c_attn, Llama family q_proj and v_proj.</summary>
    [JsonPropertyName("target_modules")]
    public TargetModules? TargetModules { get; set; }

    /// <summary>The layer whose output the adapter rewrites (a dot-suffix). Null: GPT-2 mlp.c_proj, Llama family down_proj.</summary>
    [JsonPropertyName("adapter_module")]
    public string? AdapterModule { get; set; }

    /// <summary>Decoder layers (filled from the model).</summary>
    [JsonPropertyName("num_layers")]
    public int? NumLayers { get; set; }

    /// <summary>Width of one prompt key or value row: key/value heads × head_dim (filled from the model).</summary>
    [JsonPropertyName("token_dim")]
    public int? TokenDim { get; set; }

    /// <summary>Key/value heads of the prompt (filled from the model).</summary>
    [JsonPropertyName("num_attention_heads")]
    public int? NumAttentionHeads { get; set; }

    /// <summary>Reads a NOAH supernet folder's <c>adapter_config.json</c>.</summary>
    public static NoahConfig Load(string adapterDir) => LoadFromDirectory<NoahConfig>(adapterDir, false);

    /// <summary>The largest sub-network: every part at its largest size (what an unsampled forward uses).</summary>
    [JsonIgnore]
    public SubNet Largest => new(LoraRanks.Max(), AdapterDims.Max(), PromptLengths.Max());

    /// <summary>Whether <paramref name="s"/> takes its sizes from the lists.</summary>
    public bool Allows(SubNet s) => LoraRanks.Contains(s.Rank) && AdapterDims.Contains(s.AdapterDim) && PromptLengths.Contains(s.PromptLength);

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        CheckList("lora_ranks", LoraRanks);
        CheckList("adapter_dims", AdapterDims);
        CheckList("prompt_lengths", PromptLengths);
        if (LoraAlpha <= 0) throw Invalid("lora_alpha", $"is {LoraAlpha}; expected a positive number");
        if (TargetModules is { IsAllLinear: true }) throw Invalid("target_modules", "is \"all-linear\"; NOAH takes a list of names or a regex");
        if (NumLayers is int l && l < 1) throw Invalid("num_layers", $"is {l}; expected a positive layer count");
    }

    static void CheckList(string field, IReadOnlyList<int>? values)
    {
        if (values is null || values.Count == 0) throw Invalid(field, "is empty; expected a list of sizes (0 allowed: the part is left out)");
        if (values.Any(v => v < 0)) throw Invalid(field, $"holds {values.First(v => v < 0)}; expected sizes ≥ 0");
        if (values.Distinct().Count() != values.Count) throw Invalid(field, "holds a size twice");
    }

    /// <summary>Fills the model-size fields and defaults from <paramref name="model"/>, or checks given ones; errors name <paramref name="source"/>.</summary>
    public void Prepare(ModelConfig model, string source)
    {
        try { Normalize(); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{source}: {e.Message.Replace($"{nameof(NoahConfig)}: ", "", StringComparison.Ordinal)}"); }
        int kvDim = model.HeadDim * model.KeyValueHeads;
        NumLayers ??= model.Layers;
        TokenDim ??= kvDim;
        NumAttentionHeads ??= model.KeyValueHeads;
        TargetModules ??= TargetModules.FromNames(model.IsGpt2 ? ["c_attn"] : ["q_proj", "v_proj"]);
        AdapterModule ??= model.IsGpt2 ? "mlp.c_proj" : "down_proj";
        if (NumLayers != model.Layers)
            throw new PeftSharpException($"{source}: field 'num_layers' is {NumLayers} but this {model.ModelType} model has {model.Layers} layers");
        if (TokenDim != kvDim || NumAttentionHeads != model.KeyValueHeads)
            throw new PeftSharpException($"{source}: fields 'num_attention_heads' {NumAttentionHeads} and 'token_dim' {TokenDim} do not fit this {model.ModelType} model's keys/values ({model.KeyValueHeads} key/value heads × head_dim {model.HeadDim} = {kvDim})");
    }
}

/// <summary>One NOAH sub-network: a LoRA rank, an adapter width and a prompt length (each 0 when the part is left out).</summary>
/// <param name="Rank">LoRA rank.</param>
/// <param name="AdapterDim">Bottleneck width.</param>
/// <param name="PromptLength">Prefix positions per layer.</param>
public readonly record struct SubNet(int Rank, int AdapterDim, int PromptLength)
{
    /// <inheritdoc/>
    public override string ToString() => FormattableString.Invariant($"r={Rank} d={AdapterDim} p={PromptLength}");
}
