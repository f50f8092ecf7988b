using PeftSharp.IO;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Quantization;

/// <summary>
/// Writes a model with 4-bit layers as a Hugging Face folder laid out like its source folder (same tensor names, the
/// same dtypes for full-precision tensors, side files copied): either quantized, in the transformers/bitsandbytes
/// format (<see cref="Bnb4BitFormat"/>, config.json gains <c>quantization_config</c>), or in full precision, 4-bit
/// layers dequantized to their original dtype (config.json loses <c>quantization_config</c>). The folder is built
/// under a temporary name and renamed into place; a non-empty output folder is refused.
/// </summary>
public static class QuantizedCheckpoint
{
    /// <summary>
    /// Saves <paramref name="model"/> (loaded from <paramref name="sourceDir"/>) to <paramref name="outDir"/>. With a
    /// <paramref name="quantization"/> config the 4-bit layers are written packed and the config is recorded in
    /// config.json; with null they are written dequantized.
    /// </summary>
    public static void Save(CausalLM model, string sourceDir, string outDir, BitsAndBytesConfig? quantization)
    {
        if (quantization is not null && !QuantizedModels.IsQuantized(model))
            throw new PeftSharpException("the model has no 4-bit layers to save in the bitsandbytes format");
        AtomicDirectory.CreateNew(outDir, temp =>
        {
            WriteWeights(model, sourceDir, temp, quantization is not null);
            WriteConfig(sourceDir, temp, quantization);
            ModelSaver.CopySideFiles(sourceDir, temp, "config.json");
        });
    }

    static void WriteWeights(CausalLM model, string sourceDir, string outDir, bool quantized)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        var names = new HashSet<string>(parameters.Keys);
        var modules = ModuleParameters.ModulesByPath(model);
        using var source = SafetensorsCheckpoint.Open(sourceDir);
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        long bytes = 0;
        foreach (var (key, info) in source.Tensors)
        {
            if (Bnb4BitFormat.WeightKeyOfStateEntry(key) is string weightKey && source.Tensors.ContainsKey(weightKey)) continue; // rewritten with its weight
            if (model.ParameterNameFor(key, names) is string name)
            {
                var (owner, local) = ModuleParameters.Split(name);
                if (local == "weight" && modules[owner] is Linear { QuantState: { } state } linear)
                {
                    if (quantized)
                    {
                        var entries = Bnb4BitFormat.ToTensors(key, linear.weight, state);
                        tensors.AddRange(entries);
                        bytes += entries.Sum(e => e.Value.numel() * e.Value.element_size());
                    }
                    else
                    {
                        var dtype = ModelLoader.IsFloatingPoint(info.ScalarType) ? info.ScalarType : state.DType;
                        var outIn = state.Dequantize(linear.weight, dtype);
                        tensors.Add(new(key, linear.FanInFanOut ? outIn.t() : outIn));
                        bytes += outIn.numel() * outIn.element_size();
                    }
                    continue;
                }
                // A weight stored 4-bit in the source but full precision now (dequantized, merged) keeps the dtype it has.
                var target = ModelLoader.IsFloatingPoint(info.ScalarType) ? info.ScalarType : parameters[name].dtype;
                tensors.Add(new(key, parameters[name].detach().to_type(target)));
                if (!ModelLoader.IsFloatingPoint(info.ScalarType)) { bytes += parameters[name].numel() * parameters[name].element_size(); continue; }
            }
            else if (key == "lm_head.weight") tensors.Add(new(key, model.OutputEmbedding.detach().to_type(info.ScalarType))); // tied head saved by some exporters
            else tensors.Add(new(key, source.Read(key))); // buffers kept as they were (GPT-2's attn.bias)
            bytes += info.ByteLength;
        }
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        if (bytes > ModelSaver.MaxShardBytes) SafetensorsCheckpoint.SaveSharded(outDir, tensors, ModelSaver.MaxShardBytes, metadata);
        else SafetensorsWriter.Save(Path.Combine(outDir, SafetensorsCheckpoint.SingleFileName), tensors, metadata);
    }

    /// <summary>config.json as the source's, with quantization_config set or removed (written as transformers does: sorted keys, indent 2).</summary>
    static void WriteConfig(string sourceDir, string outDir, BitsAndBytesConfig? quantization)
    {
        string path = Path.Combine(sourceDir, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new PeftSharpException($"{path}: expected a JSON object");
        config.Remove("quantization_config");
        if (quantization is not null) config["quantization_config"] = quantization.ToJson();
        File.WriteAllText(Path.Combine(outDir, "config.json"), PythonJson.Dumps(config) + "\n");
    }

}
