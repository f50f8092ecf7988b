using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.Hyperformer;

/// <summary>
/// PeftSharp's config for Hyperformer (Karimi Mahabadi et al. 2021; <c>peft_type: "HYPERFORMER"</c>, PEFT has no such
/// method): one shared hypernetwork generates the bottleneck adapter after attention and after the MLP of every layer
/// from a task embedding, a layer-id embedding and a position embedding (attention / MLP). The generated adapters are
/// Houlsby adapters (serial, swish): sub-layer output o becomes o + U·swish(D·o + b_D) + b_U.
/// </summary>
public sealed class HyperformerConfig : PeftConfig
{
    /// <summary>The peft_type value.</summary>
    public const string Type = "HYPERFORMER";

    /// <summary>A Hyperformer config with the defaults.</summary>
    public HyperformerConfig() : base(Type) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => Type;

    /// <summary>Number of tasks; task ids are 0 … num_tasks − 1.</summary>
    [JsonPropertyName("num_tasks")]
    public int NumTasks { get; set; } = 1;

    /// <summary>Bottleneck width = hidden size // reduction_factor (AdapterHub's rule; default 16 as its Houlsby preset).</summary>
    [JsonPropertyName("reduction_factor")]
    public double ReductionFactor { get; set; } = 16;

    /// <summary>Width of the task, layer-id and position embeddings (default 64).</summary>
    [JsonPropertyName("task_embedding_dim")]
    public int TaskEmbeddingDim { get; set; } = 64;

    /// <summary>Hidden width of the task projector MLP (default 128).</summary>
    [JsonPropertyName("task_hidden_dim")]
    public int TaskHiddenDim { get; set; } = 128;

    /// <summary>Width of the projected embedding the weight generators read (default 64).</summary>
    [JsonPropertyName("projected_task_embedding_dim")]
    public int ProjectedTaskEmbeddingDim { get; set; } = 64;

    /// <summary>The model's hidden size (filled from the model when null).</summary>
    [JsonPropertyName("hidden_size")]
    public int? HiddenSize { get; set; }

    /// <summary>The model's decoder layers (filled from the model when null).</summary>
    [JsonPropertyName("num_layers")]
    public int? NumLayers { get; set; }

    /// <summary>The bottleneck width for the prepared hidden size.</summary>
    [JsonIgnore]
    public int BottleneckSize => Math.Max(1, (int)Math.Floor(HiddenSize!.Value / ReductionFactor));

    /// <inheritdoc/>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (NumTasks < 1) throw Invalid("num_tasks", $"is {NumTasks}; expected at least 1");
        if (!(ReductionFactor > 0)) throw Invalid("reduction_factor", $"is {ReductionFactor}; expected a positive number");
        if (TaskEmbeddingDim < 1) throw Invalid("task_embedding_dim", $"is {TaskEmbeddingDim}; expected a positive width");
        if (TaskHiddenDim < 1) throw Invalid("task_hidden_dim", $"is {TaskHiddenDim}; expected a positive width");
        if (ProjectedTaskEmbeddingDim < 1) throw Invalid("projected_task_embedding_dim", $"is {ProjectedTaskEmbeddingDim}; expected a positive width");
    }

    /// <summary>Fills hidden_size and num_layers from the model and checks what is set; errors name <paramref name="source"/>.</summary>
    public void Prepare(ModelConfig model, string source)
    {
        HiddenSize ??= model.Hidden;
        NumLayers ??= model.Layers;
        if (HiddenSize != model.Hidden) throw new PeftSharpException($"{source}: field 'hidden_size' is {HiddenSize} but this {model.ModelType} model's hidden size is {model.Hidden}");
        if (NumLayers != model.Layers) throw new PeftSharpException($"{source}: field 'num_layers' is {NumLayers} but this {model.ModelType} model has {model.Layers} layers");
    }

    /// <summary>Reads a Hyperformer folder's <c>adapter_config.json</c>.</summary>
    public static HyperformerConfig Load(string adapterDir) => LoadFromDirectory<HyperformerConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static HyperformerConfig FromJson(string json, string sourceName = ConfigFileName) => ParseJson<HyperformerConfig>(json, sourceName, false);
}
