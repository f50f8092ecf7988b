namespace PeftSharp.Tuners.Bottleneck;

/// <summary>Where LLM-Adapters' fork puts a bottleneck adapter on a wrapped Linear layer.</summary>
public enum LinearAdapterPlacement
{
    /// <summary><c>mh_adapter</c>: on the layer's input, before the layer: <c>y = W·(x + s·f(x)) + b</c> (f: in → in).</summary>
    Input,
    /// <summary><c>output_adapter</c>: on the layer's output: <c>z = W·x + b; y = z + s·f(z)</c> (f: out → out).</summary>
    Output,
    /// <summary><c>parallel_adapter</c>: beside the layer, from its input: <c>y = W·x + b + s·f(x)</c> (f: in → out).</summary>
    Parallel,
}

/// <summary>
/// LLM-Adapters' per-model-type tables (<c>mapping.py</c>: TRANSFORMERS_MODELS_TO_{BOTTLENECK,ADAPTERP,PARALLEL}_TARGET_MODULES_MAPPING;
/// <c>bottleneck.py</c>: TRANSFORMERS_MODELS_TO_ADAPTER_TYPE_MAPPING). The fork lists <c>llama</c> (and bloom, gptj,
/// gpt_neo, opt, chatglm, which PeftSharp does not load). PeftSharp adds, as documented extensions: mistral and qwen2
/// (same module names as llama, same entries) and gpt2 (modelled on the fork's gpt_neo entry: <c>c_fc</c> on its input,
/// the MLP's <c>c_proj</c> on its output; parallel beside the fused <c>c_attn</c>, as the fork does for bloom's fused
/// query_key_value).
/// </summary>
public static class BottleneckDefaults
{
    static readonly Dictionary<string, string[]> Serial = new(StringComparer.Ordinal)
    {
        ["llama"] = ["gate_proj", "up_proj", "down_proj"],
        ["gpt2"] = ["c_fc", "mlp.c_proj"],
    };

    static readonly Dictionary<string, string[]> AdapterP = new(StringComparer.Ordinal)
    {
        ["llama"] = ["down_proj"],
        ["gpt2"] = ["mlp.c_proj"],
    };

    static readonly Dictionary<string, string[]> ParallelTargets = new(StringComparer.Ordinal)
    {
        ["llama"] = ["q_proj", "v_proj", "k_proj"],
        ["gpt2"] = ["c_attn"],
    };

    static readonly Dictionary<string, Dictionary<string, LinearAdapterPlacement>> SerialPlacement = new(StringComparer.Ordinal)
    {
        ["llama"] = new(StringComparer.Ordinal)
        {
            ["gate_proj"] = LinearAdapterPlacement.Input,
            ["up_proj"] = LinearAdapterPlacement.Input,
            ["down_proj"] = LinearAdapterPlacement.Output,
        },
        ["gpt2"] = new(StringComparer.Ordinal)
        {
            ["c_fc"] = LinearAdapterPlacement.Input,
            ["c_proj"] = LinearAdapterPlacement.Output,
        },
    };

    /// <summary>The table entry PeftSharp uses for a model type (mistral and qwen2 read llama's).</summary>
    static string Family(string modelType) => modelType is "mistral" or "qwen2" ? "llama" : modelType;

    /// <summary>The fork's <c>_prepare_bottleneck_config</c>: the default target_modules, or null when the type has none.</summary>
    public static IReadOnlyList<string>? TargetModulesFor(string modelType, bool parallel, bool adapterP)
    {
        var table = parallel ? ParallelTargets : adapterP ? AdapterP : Serial;
        return table.TryGetValue(Family(modelType), out var names) ? names : null;
    }

    /// <summary>
    /// The placement of the adapter on a target layer named <paramref name="layerName"/> (the last path segment):
    /// parallel for every target when <c>use_parallel_adapter</c>, else the model type's table (an error for a name
    /// the table does not hold, where the fork fails with a KeyError).
    /// </summary>
    public static LinearAdapterPlacement PlacementFor(string? modelType, string layerName, bool parallel, string where)
    {
        if (parallel) return LinearAdapterPlacement.Parallel;
        if (modelType is null || !SerialPlacement.TryGetValue(Family(modelType), out var table))
            throw new PeftSharpException($"{where}: LLM-Adapters has no serial adapter placement for model_type \"{modelType ?? "(none)"}\"; set use_parallel_adapter");
        if (!table.TryGetValue(layerName, out var placement))
            throw new PeftSharpException(
                $"{where}: target '{layerName}' has no serial adapter placement in LLM-Adapters for model_type \"{modelType}\" " +
                $"(it places adapters on {string.Join(", ", table.Select(kv => $"{kv.Key} ({(kv.Value == LinearAdapterPlacement.Input ? "input" : "output")})"))}); set use_parallel_adapter or change target_modules");
        return placement;
    }
}
