using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PeftSharp.Models.Layers;

namespace PeftSharp.Models;

/// <summary>
/// A model's <c>config.json</c>, bound with Hugging Face's field names. One class covers the families we
/// run (GPT-2 and Llama/Mistral/Qwen2); each family reads the fields it knows through the accessors below,
/// which apply transformers' defaults.
/// </summary>
public sealed class ModelConfig
{
    public static readonly string[] SupportedModelTypes = ["gpt2", "llama", "mistral", "qwen2"];

    [JsonPropertyName("model_type")] public string? ModelType { get; set; }
    [JsonPropertyName("vocab_size")] public int VocabSize { get; set; }
    [JsonPropertyName("tie_word_embeddings")] public bool? TieWordEmbeddingsRaw { get; set; }
    [JsonPropertyName("bos_token_id")] public JsonNode? BosTokenIdRaw { get; set; }
    [JsonPropertyName("eos_token_id")] public JsonNode? EosTokenIdRaw { get; set; }
    [JsonPropertyName("torch_dtype")] public string? TorchDtype { get; set; }

    // GPT-2
    [JsonPropertyName("n_embd")] public int NEmbd { get; set; }
    [JsonPropertyName("n_layer")] public int NLayer { get; set; }
    [JsonPropertyName("n_head")] public int NHead { get; set; }
    [JsonPropertyName("n_positions")] public int NPositions { get; set; }
    [JsonPropertyName("n_inner")] public int? NInner { get; set; }
    [JsonPropertyName("layer_norm_epsilon")] public double LayerNormEpsilon { get; set; } = 1e-5;
    [JsonPropertyName("activation_function")] public string ActivationFunction { get; set; } = "gelu_new";
    [JsonPropertyName("scale_attn_weights")] public bool ScaleAttnWeights { get; set; } = true;
    [JsonPropertyName("scale_attn_by_inverse_layer_idx")] public bool ScaleAttnByInverseLayerIdx { get; set; }
    [JsonPropertyName("reorder_and_upcast_attn")] public bool ReorderAndUpcastAttn { get; set; }

    // Llama family
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; set; }
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; set; }
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; set; }
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; set; }
    [JsonPropertyName("num_key_value_heads")] public int? NumKeyValueHeads { get; set; }
    [JsonPropertyName("head_dim")] public int? HeadDimRaw { get; set; }
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; set; } = 2048;
    [JsonPropertyName("rms_norm_eps")] public double RmsNormEps { get; set; } = 1e-6;
    [JsonPropertyName("rope_theta")] public double RopeTheta { get; set; } = 10000.0;
    [JsonPropertyName("rope_scaling")] public RopeScaling? RopeScaling { get; set; }
    [JsonPropertyName("attention_bias")] public bool AttentionBias { get; set; }
    [JsonPropertyName("mlp_bias")] public bool MlpBias { get; set; }
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; set; } = "silu";
    [JsonPropertyName("sliding_window")] public int? SlidingWindow { get; set; }
    [JsonPropertyName("use_sliding_window")] public bool? UseSlidingWindow { get; set; }

    /// <summary>Fields we do not model, kept so the config can be written back unchanged.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; set; }

    [JsonIgnore] public string? SourcePath { get; private set; }

    public bool IsGpt2 => ModelType == "gpt2";

    /// <summary>transformers ties GPT-2's head by default; Llama-family configs say so explicitly (default false).</summary>
    public bool TieWordEmbeddings => TieWordEmbeddingsRaw ?? IsGpt2;

    public int Layers => IsGpt2 ? NLayer : NumHiddenLayers;
    public int Hidden => IsGpt2 ? NEmbd : HiddenSize;
    public int Heads => IsGpt2 ? NHead : NumAttentionHeads;
    public int KeyValueHeads => IsGpt2 ? NHead : NumKeyValueHeads ?? NumAttentionHeads;
    public int HeadDim => HeadDimRaw ?? Hidden / Heads;
    public int Inner => IsGpt2 ? NInner ?? 4 * NEmbd : IntermediateSize;
    public int ContextLength => IsGpt2 ? NPositions : MaxPositionEmbeddings;

    /// <summary>The longest span one forward may attend over exactly (Mistral/Qwen2 sliding windows cap it).</summary>
    public int AttentionSpan
    {
        get
        {
            bool sliding = ModelType == "mistral" ? SlidingWindow is not null : UseSlidingWindow == true && SlidingWindow is not null;
            return sliding ? Math.Min(ContextLength, SlidingWindow!.Value) : ContextLength;
        }
    }

    /// <summary>Qwen2 always has q/k/v biases (and none on o_proj); Llama and Mistral follow <c>attention_bias</c>.</summary>
    public bool QkvBias => ModelType == "qwen2" || AttentionBias;
    public bool OutputBias => ModelType != "qwen2" && AttentionBias;

    public IReadOnlyList<int> EosTokenIds => ReadIds(EosTokenIdRaw);
    public int? BosTokenId => ReadIds(BosTokenIdRaw) is { Count: > 0 } ids ? ids[0] : null;

    static IReadOnlyList<int> ReadIds(JsonNode? node) => node switch
    {
        null => [],
        JsonArray a => a.Select(x => x!.GetValue<int>()).ToArray(),
        _ => [node.GetValue<int>()],
    };

    public static ModelConfig Load(string modelDir)
    {
        string path = Directory.Exists(modelDir) ? Path.Combine(modelDir, "config.json") : modelDir;
        if (!Directory.Exists(modelDir) && !File.Exists(modelDir))
            throw new PeftSharpException($"{modelDir}: model folder not found");
        if (!File.Exists(path))
            throw new PeftSharpException($"{path}: not found (a model folder needs config.json)");
        ModelConfig? config;
        try { config = JsonSerializer.Deserialize<ModelConfig>(File.ReadAllText(path)); }
        catch (JsonException e) { throw PeftSharp.IO.JsonErrors.Invalid(path, e); }
        if (config is null) throw new PeftSharpException($"{path}: expected a JSON object");
        config.SourcePath = path;
        config.Validate();
        return config;
    }

    public static ModelConfig FromJson(string json)
    {
        var config = JsonSerializer.Deserialize<ModelConfig>(json) ?? throw new PeftSharpException("config: expected a JSON object");
        config.Validate();
        return config;
    }

    void Validate()
    {
        string where = SourcePath ?? "config.json";
        if (ModelType is null)
            throw new PeftSharpException($"{where}: missing \"model_type\" (expected one of {string.Join(", ", SupportedModelTypes)})");
        if (!SupportedModelTypes.Contains(ModelType))
            throw new PeftSharpException($"{where}: unknown model_type \"{ModelType}\" (expected one of {string.Join(", ", SupportedModelTypes)})");
        void Positive(string field, int value)
        {
            if (value <= 0) throw new PeftSharpException($"{where}: \"{field}\" must be a positive integer, got {value}");
        }
        Positive("vocab_size", VocabSize);
        if (IsGpt2)
        {
            Positive("n_embd", NEmbd); Positive("n_layer", NLayer); Positive("n_head", NHead); Positive("n_positions", NPositions);
            if (NEmbd % NHead != 0) throw new PeftSharpException($"{where}: n_embd ({NEmbd}) must be divisible by n_head ({NHead})");
            if (ScaleAttnByInverseLayerIdx || ReorderAndUpcastAttn || !ScaleAttnWeights)
                throw new PeftSharpException($"{where}: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn / scale_attn_weights=false are not supported");
        }
        else
        {
            Positive("hidden_size", HiddenSize); Positive("intermediate_size", IntermediateSize);
            Positive("num_hidden_layers", NumHiddenLayers); Positive("num_attention_heads", NumAttentionHeads);
            if (HeadDimRaw is null && HiddenSize % NumAttentionHeads != 0)
                throw new PeftSharpException($"{where}: hidden_size ({HiddenSize}) must be divisible by num_attention_heads ({NumAttentionHeads})");
            if (NumAttentionHeads % KeyValueHeads != 0)
                throw new PeftSharpException($"{where}: num_attention_heads ({NumAttentionHeads}) must be a multiple of num_key_value_heads ({KeyValueHeads})");
            if (HeadDim % 2 != 0) throw new PeftSharpException($"{where}: head_dim ({HeadDim}) must be even for rotary embeddings");
            RopeScaling?.Validate(where);
        }
        Activations.Check(IsGpt2 ? ActivationFunction : HiddenAct, where);
    }
}

/// <summary><c>rope_scaling</c>: none, "linear", or Llama 3's "llama3" frequency adjustment.</summary>
public sealed class RopeScaling
{
    [JsonPropertyName("rope_type")] public string? RopeType { get; set; }
    [JsonPropertyName("type")] public string? LegacyType { get; set; }
    [JsonPropertyName("factor")] public double Factor { get; set; } = 1.0;
    [JsonPropertyName("low_freq_factor")] public double LowFreqFactor { get; set; } = 1.0;
    [JsonPropertyName("high_freq_factor")] public double HighFreqFactor { get; set; } = 4.0;
    [JsonPropertyName("original_max_position_embeddings")] public int OriginalMaxPositionEmbeddings { get; set; } = 8192;

    public string Type => RopeType ?? LegacyType ?? "default";

    internal void Validate(string where)
    {
        if (Type is not ("default" or "linear" or "llama3"))
            throw new PeftSharpException($"{where}: rope_scaling type \"{Type}\" is not supported (expected default, linear or llama3)");
    }
}
