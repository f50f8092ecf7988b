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
    /// <summary>The <c>model_type</c> values PeftSharp can load.</summary>
    public static readonly string[] SupportedModelTypes = ["gpt2", "llama", "mistral", "qwen2"];

    /// <summary><c>model_type</c>: gpt2, llama, mistral or qwen2.</summary>
    [JsonPropertyName("model_type")] public string? ModelType { get; set; }
    /// <summary><c>vocab_size</c>: rows of the embedding and of the output head.</summary>
    [JsonPropertyName("vocab_size")] public int VocabSize { get; set; }
    /// <summary><c>tie_word_embeddings</c> as written (null when absent); see <see cref="TieWordEmbeddings"/>.</summary>
    [JsonPropertyName("tie_word_embeddings")] public bool? TieWordEmbeddingsRaw { get; set; }
    /// <summary><c>bos_token_id</c> as written (a number, a list or null); see <see cref="BosTokenId"/>.</summary>
    [JsonPropertyName("bos_token_id")] public JsonNode? BosTokenIdRaw { get; set; }
    /// <summary><c>eos_token_id</c> as written (a number, a list or null); see <see cref="EosTokenIds"/>.</summary>
    [JsonPropertyName("eos_token_id")] public JsonNode? EosTokenIdRaw { get; set; }
    /// <summary><c>torch_dtype</c>: the dtype the weights were saved in (e.g. "float32", "bfloat16").</summary>
    [JsonPropertyName("torch_dtype")] public string? TorchDtype { get; set; }

    // GPT-2
    /// <summary>GPT-2 <c>n_embd</c>: hidden size.</summary>
    [JsonPropertyName("n_embd")] public int NEmbd { get; set; }
    /// <summary>GPT-2 <c>n_layer</c>: number of blocks.</summary>
    [JsonPropertyName("n_layer")] public int NLayer { get; set; }
    /// <summary>GPT-2 <c>n_head</c>: attention heads.</summary>
    [JsonPropertyName("n_head")] public int NHead { get; set; }
    /// <summary>GPT-2 <c>n_positions</c>: learned positions, the context length.</summary>
    [JsonPropertyName("n_positions")] public int NPositions { get; set; }
    /// <summary>GPT-2 <c>n_inner</c>: MLP size (null: 4 · n_embd).</summary>
    [JsonPropertyName("n_inner")] public int? NInner { get; set; }
    /// <summary>GPT-2 <c>layer_norm_epsilon</c> (default 1e-5).</summary>
    [JsonPropertyName("layer_norm_epsilon")] public double LayerNormEpsilon { get; set; } = 1e-5;
    /// <summary>GPT-2 <c>activation_function</c> (default gelu_new).</summary>
    [JsonPropertyName("activation_function")] public string ActivationFunction { get; set; } = "gelu_new";
    /// <summary>GPT-2 <c>scale_attn_weights</c>: divide attention scores by √head_dim (default true; false is refused).</summary>
    [JsonPropertyName("scale_attn_weights")] public bool ScaleAttnWeights { get; set; } = true;
    /// <summary>
    /// GPT-2 <c>scale_attn_by_inverse_layer_idx</c>: also divide scores by layer index + 1 (default false; true is refused).
    /// </summary>
    [JsonPropertyName("scale_attn_by_inverse_layer_idx")] public bool ScaleAttnByInverseLayerIdx { get; set; }
    /// <summary>
    /// GPT-2 <c>reorder_and_upcast_attn</c>: compute attention scores in float32 (default false; true is refused).
    /// </summary>
    [JsonPropertyName("reorder_and_upcast_attn")] public bool ReorderAndUpcastAttn { get; set; }

    // Llama family
    /// <summary>Llama-family <c>hidden_size</c>.</summary>
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; set; }
    /// <summary>Llama-family <c>intermediate_size</c>: MLP size.</summary>
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; set; }
    /// <summary>Llama-family <c>num_hidden_layers</c>.</summary>
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; set; }
    /// <summary>Llama-family <c>num_attention_heads</c>.</summary>
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; set; }
    /// <summary>Llama-family <c>num_key_value_heads</c> for grouped-query attention (null: as many as attention heads).</summary>
    [JsonPropertyName("num_key_value_heads")] public int? NumKeyValueHeads { get; set; }
    /// <summary><c>head_dim</c> as written (null: hidden / heads); see <see cref="HeadDim"/>.</summary>
    [JsonPropertyName("head_dim")] public int? HeadDimRaw { get; set; }
    /// <summary>Llama-family <c>max_position_embeddings</c>: the context length (default 2048).</summary>
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; set; } = 2048;
    /// <summary>Llama-family <c>rms_norm_eps</c> (default 1e-6).</summary>
    [JsonPropertyName("rms_norm_eps")] public double RmsNormEps { get; set; } = 1e-6;
    /// <summary>Llama-family <c>rope_theta</c>: rotary base (default 10000).</summary>
    [JsonPropertyName("rope_theta")] public double RopeTheta { get; set; } = 10000.0;
    /// <summary>Llama-family <c>rope_scaling</c>, or null.</summary>
    [JsonPropertyName("rope_scaling")] public RopeScaling? RopeScaling { get; set; }
    /// <summary>Llama/Mistral <c>attention_bias</c>: biases on q/k/v/o projections (default false).</summary>
    [JsonPropertyName("attention_bias")] public bool AttentionBias { get; set; }
    /// <summary>Llama <c>mlp_bias</c>: biases on the MLP projections (default false).</summary>
    [JsonPropertyName("mlp_bias")] public bool MlpBias { get; set; }
    /// <summary>Llama-family <c>hidden_act</c> (default silu).</summary>
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; set; } = "silu";
    /// <summary>Mistral/Qwen2 <c>sliding_window</c>: how far back attention reaches, or null.</summary>
    [JsonPropertyName("sliding_window")] public int? SlidingWindow { get; set; }
    /// <summary>Qwen2 <c>use_sliding_window</c> (null: absent).</summary>
    [JsonPropertyName("use_sliding_window")] public bool? UseSlidingWindow { get; set; }

    /// <summary>Fields we do not model, kept so the config can be written back unchanged.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; set; }

    /// <summary>The config.json this config was read from (null when parsed from a string).</summary>
    [JsonIgnore] public string? SourcePath { get; private set; }

    /// <summary>Whether <see cref="ModelType"/> is gpt2.</summary>
    public bool IsGpt2 => ModelType == "gpt2";

    /// <summary>transformers ties GPT-2's head by default; Llama-family configs say so explicitly (default false).</summary>
    public bool TieWordEmbeddings => TieWordEmbeddingsRaw ?? IsGpt2;

    /// <summary>Number of decoder blocks (n_layer or num_hidden_layers).</summary>
    public int Layers => IsGpt2 ? NLayer : NumHiddenLayers;
    /// <summary>Hidden size (n_embd or hidden_size).</summary>
    public int Hidden => IsGpt2 ? NEmbd : HiddenSize;
    /// <summary>Attention heads (n_head or num_attention_heads).</summary>
    public int Heads => IsGpt2 ? NHead : NumAttentionHeads;
    /// <summary>Key/value heads (GPT-2: the attention heads; Llama: num_key_value_heads, default num_attention_heads).</summary>
    public int KeyValueHeads => IsGpt2 ? NHead : NumKeyValueHeads ?? NumAttentionHeads;
    /// <summary>Per-head size: head_dim, or hidden / heads.</summary>
    public int HeadDim => HeadDimRaw ?? Hidden / Heads;
    /// <summary>MLP size (n_inner, default 4 · n_embd, or intermediate_size).</summary>
    public int Inner => IsGpt2 ? NInner ?? 4 * NEmbd : IntermediateSize;
    /// <summary>Positions the model was trained for (n_positions or max_position_embeddings).</summary>
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
    /// <summary>Whether o_proj has a bias: attention_bias, except Qwen2 (never).</summary>
    public bool OutputBias => ModelType != "qwen2" && AttentionBias;

    /// <summary>End-of-sequence ids from <c>eos_token_id</c> (one or several; empty when absent).</summary>
    public IReadOnlyList<int> EosTokenIds => ReadIds(EosTokenIdRaw);
    /// <summary>The beginning-of-sequence id (the first of <c>bos_token_id</c>), or null.</summary>
    public int? BosTokenId => ReadIds(BosTokenIdRaw) is { Count: > 0 } ids ? ids[0] : null;

    static IReadOnlyList<int> ReadIds(JsonNode? node) => node switch
    {
        null => [],
        JsonArray a => a.Select(x => x!.GetValue<int>()).ToArray(),
        _ => [node.GetValue<int>()],
    };

    /// <summary>Reads and validates <c>config.json</c> from a model folder (or the file itself).</summary>
    /// <exception cref="PeftSharpException">Missing folder or file, invalid JSON, or an unsupported model type or setting.</exception>
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

    /// <summary>Parses and validates a config.json text.</summary>
    /// <exception cref="PeftSharpException">Not a JSON object, or an unsupported model type or setting.</exception>
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
    /// <summary><c>rope_type</c>: "default", "linear" or "llama3".</summary>
    [JsonPropertyName("rope_type")] public string? RopeType { get; set; }
    /// <summary><c>type</c>: the older name of rope_type.</summary>
    [JsonPropertyName("type")] public string? LegacyType { get; set; }
    /// <summary><c>factor</c>: how many times the context is stretched (default 1).</summary>
    [JsonPropertyName("factor")] public double Factor { get; set; } = 1.0;
    /// <summary>Llama 3 <c>low_freq_factor</c> (default 1).</summary>
    [JsonPropertyName("low_freq_factor")] public double LowFreqFactor { get; set; } = 1.0;
    /// <summary>Llama 3 <c>high_freq_factor</c> (default 4).</summary>
    [JsonPropertyName("high_freq_factor")] public double HighFreqFactor { get; set; } = 4.0;
    /// <summary>Llama 3 <c>original_max_position_embeddings</c>: the context before scaling (default 8192).</summary>
    [JsonPropertyName("original_max_position_embeddings")] public int OriginalMaxPositionEmbeddings { get; set; } = 8192;

    /// <summary>The scaling type: rope_type, else type, else "default".</summary>
    public string Type => RopeType ?? LegacyType ?? "default";

    internal void Validate(string where)
    {
        if (Type is not ("default" or "linear" or "llama3"))
            throw new PeftSharpException($"{where}: rope_scaling type \"{Type}\" is not supported (expected default, linear or llama3)");
    }
}
