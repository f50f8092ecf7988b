using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Prompts;

/// <summary>
/// PEFT's on-disk format for soft prompts: <c>adapter_config.json</c> (peft_type PROMPT_TUNING / P_TUNING /
/// PREFIX_TUNING, inference_mode true) and <c>adapter_model.safetensors</c> with one tensor, <c>prompt_embeddings</c>:
/// the prompt as <c>get_prompt_embedding_to_save</c> computes it — [num_virtual_tokens·num_transformer_submodules,
/// token_dim] for prompt tuning and P-tuning (the encoder's output), [num_virtual_tokens, num_layers·2·token_dim] for
/// prefix tuning (the projection's output when prefix_projection is on). A loaded adapter holds that tensor only.
/// </summary>
public static class PromptFiles
{
    /// <summary>The tensor name PEFT saves a prompt-learning adapter under (<c>prompt_embeddings</c>).</summary>
    public const string TensorName = "prompt_embeddings";

    /// <summary>Writes one adapter in PEFT's layout (a subfolder for names other than "default"); returns the folder.</summary>
    public static string Save<TConfig>(PromptLearningModel<TConfig> model, string dir, string adapter = AdapterFiles.DefaultAdapter, string? baseModelNameOrPath = null)
        where TConfig : PromptLearningConfig
    {
        var config = (TConfig)model.ConfigOf(adapter);
        string folder = AdapterFiles.FolderFor(dir, adapter);
        using var prompt = model.PromptEmbeddings(adapter);
        AdapterFiles.WriteFolder(folder, [new KeyValuePair<string, Tensor>(TensorName, prompt)], config, baseModelNameOrPath);
        return folder;
    }

    /// <summary>Loads a PEFT soft-prompt folder as a new adapter (PEFT's load_adapter); it is not made active.</summary>
    public static void LoadAdapter<TConfig>(PromptLearningModel<TConfig> model, string dir, string adapter, bool trainable = false)
        where TConfig : PromptLearningConfig
    {
        string weights = AdapterFiles.WeightsPath(dir);
        string configPath = Path.Combine(dir, PeftConfig.ConfigFileName);
        var config = (TConfig)model.Tuner.LoadConfig(dir);
        var expected = ExpectedShape(config, model, configPath);
        CheckShape(weights, expected, config);
        model.AddAdapterCore(adapter, config, seed: null, trainable, inference: true, source: configPath);
        try
        {
            AdapterFiles.ReadTensors(weights, new Dictionary<string, Tensor> { [TensorName] = model.Module(adapter).EmbeddingWeight });
        }
        catch
        {
            model.DeleteAdapter(adapter);
            throw;
        }
    }

    static long[] ExpectedShape<TConfig>(TConfig config, PromptLearningModel<TConfig> model, string configPath) where TConfig : PromptLearningConfig
    {
        config.Prepare(model.Model.Config, configPath);
        return config is PrefixTuningConfig
            ? [config.NumVirtualTokens!.Value, config.NumLayers!.Value * 2L * config.TokenDim!.Value]
            : [config.TotalVirtualTokens, config.TokenDim!.Value];
    }

    static void CheckShape(string weights, long[] expected, PromptLearningConfig config)
    {
        using var file = SafetensorsFile.Open(weights);
        var info = file.Tensors.FirstOrDefault(t => t.Key == TensorName).Value
            ?? throw new PeftSharpException($"{weights}: missing tensor '{TensorName}' (a {config.PeftType} adapter stores its prompt there)");
        foreach (var key in file.Tensors.Select(t => t.Key).Where(k => k != TensorName))
            throw new PeftSharpException($"{weights}: tensor '{key}' has no place in a {config.PeftType} adapter (expected '{TensorName}' only)");
        if (!info.Shape.SequenceEqual(expected))
        {
            string meaning = config is PrefixTuningConfig p
                ? $"num_virtual_tokens {p.NumVirtualTokens} × (num_layers {p.NumLayers} · 2 · token_dim {p.TokenDim})"
                : $"num_virtual_tokens {config.TotalVirtualTokens} × hidden size {config.TokenDim}";
            throw new PeftSharpException(
                $"{weights}: tensor '{TensorName}' has shape [{string.Join(", ", info.Shape)}] but this model needs [{string.Join(", ", expected)}] ({meaning})");
        }
    }
}
