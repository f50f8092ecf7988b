using PeftSharp.Quantization;
using PeftSharp.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Builds a model from <c>config.json</c> and fills it from the folder's safetensors checkpoint
/// (single file or sharded), matching Hugging Face key names directly: no renaming table.
/// </summary>
public static class ModelLoader
{
    /// <summary>PyTorch's meta device: tensors with shapes and dtypes but no memory.</summary>
    public static readonly Device Meta = new(DeviceType.META);

    /// <summary>An uninitialised model of the config's family (parameters allocated with torch.empty).</summary>
    public static CausalLM Create(ModelConfig config, ScalarType dtype = ScalarType.Float32, Device? device = null) =>
        config.ModelType switch
        {
            "gpt2" => new Gpt2LMHeadModel(config, dtype, device),
            "llama" or "mistral" or "qwen2" => new LlamaForCausalLM(config, dtype, device),
            _ => throw new PeftSharpException($"unknown model_type \"{config.ModelType}\""),
        };

    /// <summary>A model on the meta device: shapes and parameter counts without memory.</summary>
    public static CausalLM CreateMeta(ModelConfig config, ScalarType dtype = ScalarType.Float32) => Create(config, dtype, Meta);

    /// <summary>Whether <paramref name="modelDir"/> has safetensors weights (model.safetensors or a sharded index).</summary>
    public static bool HasWeights(string modelDir) => SafetensorsCheckpoint.Exists(modelDir);

    /// <summary>
    /// Loads config and weights. Each parameter is read straight into its own storage (one copy in memory). With
    /// <paramref name="quantization"/>, or for a folder saved in bitsandbytes' 4-bit format, the linear layers are held
    /// in 4 bits and loaded layer by layer (see <see cref="QuantizedModelLoader"/>). A GPTQ folder loads dequantized
    /// (see <see cref="Quantization.Gptq.GptqModelLoader"/>).
    /// </summary>
    public static CausalLM Load(string modelDir, ScalarType dtype = ScalarType.Float32, Device? device = null, BitsAndBytesConfig? quantization = null)
    {
        var config = ModelConfig.Load(modelDir);
        if (Quantization.Gptq.GptqConfig.FromModelConfig(config) is not null)
        {
            if (quantization is not null) throw new PeftSharpException($"{config.SourcePath}: the folder is GPTQ-quantized; it cannot also be loaded in 4 bits (bitsandbytes)");
            return Quantization.Gptq.GptqModelLoader.Load(modelDir, dtype, device);
        }
        if (quantization is not null || BitsAndBytesConfig.FromModelConfig(config) is not null)
            return QuantizedModelLoader.Load(modelDir, dtype, device, quantization);
        using var checkpoint = SafetensorsCheckpoint.Open(modelDir);
        var model = Create(config, dtype, device);
        try
        {
            LoadWeights(model, checkpoint);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }

    /// <summary>Fills every parameter of the model from the checkpoint, checking names, shapes and dtypes.</summary>
    public static void LoadWeights(CausalLM model, SafetensorsCheckpoint checkpoint)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var names = new HashSet<string>(parameters.Keys);
        var loaded = new HashSet<string>();
        var unexpected = new List<string>();
        using var _ = no_grad();
        foreach (var (key, info) in checkpoint.Tensors)
        {
            string? name = model.ParameterNameFor(key, names);
            if (name is null)
            {
                if (!model.IsIgnorableCheckpointKey(key)) unexpected.Add(key);
                continue;
            }
            var p = parameters[name];
            if (!info.Shape.SequenceEqual(p.shape))
                throw new PeftSharpException(
                    $"{checkpoint.FilePathOf(key)}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", p.shape)}] from config.json");
            if (!IsFloatingPoint(info.ScalarType))
                throw new PeftSharpException(
                    $"{checkpoint.FilePathOf(key)}: tensor '{key}' has dtype {info.DType}, expected a floating-point dtype (F32, F16 or BF16)");
            if (!loaded.Add(name))
                throw new PeftSharpException($"{checkpoint.FilePathOf(key)}: tensor '{key}' maps to parameter '{name}', which another key already filled");
            checkpoint.ReadInto(key, p);
        }
        CheckCoverage(model, checkpoint, names.Where(n => !loaded.Contains(n)).ToList(), unexpected);
    }

    /// <summary>One line naming the first missing parameter or unexpected checkpoint tensor (and how many more), if any.</summary>
    internal static void CheckCoverage(CausalLM model, SafetensorsCheckpoint checkpoint, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected)
    {
        if (missing.Count > 0)
            throw new PeftSharpException(
                $"{checkpoint.Path}: missing tensor '{missing[0]}'" + (missing.Count > 1 ? $" and {missing.Count - 1} more" : "") +
                $" (expected by {model.Config.ModelType} config.json)");
        if (unexpected.Count > 0)
            throw new PeftSharpException(
                $"{checkpoint.Path}: unexpected tensor '{unexpected[0]}'" + (unexpected.Count > 1 ? $" and {unexpected.Count - 1} more" : "") +
                $" (not a parameter of a {model.Config.ModelType} model with this config.json)");
    }

    internal static bool IsFloatingPoint(ScalarType t) =>
        t is ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64;

    /// <summary>Parses a --dtype value: float32 (fp32, f32) or bfloat16 (bf16), any case.</summary>
    /// <exception cref="PeftSharpException">Any other name.</exception>
    public static ScalarType ParseDType(string name) => name.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "f32" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        _ => throw new PeftSharpException($"--dtype: expected float32 or bfloat16, got \"{name}\""),
    };

    /// <summary>The Hugging Face name of a dtype (float32, bfloat16, float16, ...).</summary>
    public static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => t.ToString().ToLowerInvariant(),
    };
}
