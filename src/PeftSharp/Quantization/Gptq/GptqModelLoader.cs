using PeftSharp.Models;
using PeftSharp.Tensors;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Quantization.Gptq;

/// <summary>
/// Loads a GPTQ folder (config.json with <c>quant_method: "gptq"</c>, written by transformers, AutoGPTQ, GPTQModel or
/// PeftSharp): bits 2/3/4/8, checkpoint formats v1 and v2, symmetric or asymmetric, act-order <c>g_idx</c>, and
/// PeftSharp's float zero points. Each GPTQ layer is dequantized on load into its ordinary weight (in the model dtype)
/// and keeps its codes in <see cref="GptqLayers"/>; every other tensor loads as in a plain folder.
/// </summary>
public static class GptqModelLoader
{
    /// <summary>Loads <paramref name="modelDir"/>; <paramref name="dtype"/> is the dtype of all float parameters.</summary>
    public static CausalLM Load(string modelDir, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        var config = ModelConfig.Load(modelDir);
        var gptq = GptqConfig.FromModelConfig(config) ?? throw new PeftSharpException($"{config.SourcePath}: quantization_config is not GPTQ (quant_method \"gptq\")");
        using var checkpoint = SafetensorsCheckpoint.Open(modelDir);
        var model = ModelLoader.Create(config, dtype, device);
        try
        {
            Fill(model, checkpoint, gptq);
        }
        catch
        {
            foreach (var (_, layer, _) in GptqLayers.Quantized(model).ToList()) GptqLayers.Remove(layer);
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }

    static void Fill(CausalLM model, SafetensorsCheckpoint checkpoint, GptqConfig gptq)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var names = new HashSet<string>(parameters.Keys);
        var modules = ModuleParameters.ModulesByPath(model);
        var loaded = new HashSet<string>();
        var unexpected = new List<string>();
        var layerKeys = new Dictionary<string, string>(StringComparer.Ordinal); // weight parameter → checkpoint layer prefix
        using var _ = no_grad();
        foreach (var (key, info) in checkpoint.Tensors)
        {
            if (GptqFormat.LayerOf(key) is string prefix && model.ParameterNameFor(prefix + ".weight", names) is string weightName)
            {
                layerKeys.TryAdd(weightName, prefix);
                continue;
            }
            string? name = model.ParameterNameFor(key, names);
            if (name is null)
            {
                if (!model.IsIgnorableCheckpointKey(key)) unexpected.Add(key);
                continue;
            }
            var p = parameters[name];
            if (!info.Shape.SequenceEqual(p.shape) || !ModelLoader.IsFloatingPoint(info.ScalarType))
                throw new PeftSharpException(
                    $"{checkpoint.FilePathOf(key)}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}] {info.DType}, expected a float tensor [{string.Join(", ", p.shape)}] from config.json");
            if (!loaded.Add(name))
                throw new PeftSharpException($"{checkpoint.FilePathOf(key)}: tensor '{key}' maps to parameter '{name}', which another key already filled");
            checkpoint.ReadInto(key, p);
        }
        foreach (var (weightName, prefix) in layerKeys)
        {
            var (owner, local) = ModuleParameters.Split(weightName);
            string where = $"{checkpoint.FilePathOf(prefix + ".qweight")}: layer '{prefix}'";
            if (local != "weight" || modules[owner] is not Linear linear) throw new PeftSharpException($"{where}: GPTQ tensors for a parameter that is not a linear layer's weight");
            if (!loaded.Add(weightName)) throw new PeftSharpException($"{where}: the weight is stored both plain and GPTQ-quantized");
            foreach (var suffix in new[] { "qweight", "qzeros", "scales" })
                if (!checkpoint.Tensors.ContainsKey(prefix + "." + suffix)) throw new PeftSharpException($"{where}: missing tensor '{prefix}.{suffix}'");
            using var scope = NewDisposeScope();
            var gIdxKey = prefix + ".g_idx";
            var weight = GptqFormat.Read(checkpoint.Read(prefix + ".qweight"), checkpoint.Read(prefix + ".qzeros"), checkpoint.Read(prefix + ".scales"),
                checkpoint.Tensors.ContainsKey(gIdxKey) ? checkpoint.Read(gIdxKey) : null, gptq, linear.InFeatures, linear.OutFeatures, where);
            GptqLayers.Set(linear, weight);
        }
        ModelLoader.CheckCoverage(model, checkpoint, names.Where(n => !loaded.Contains(n)).ToList(), unexpected);
    }
}
