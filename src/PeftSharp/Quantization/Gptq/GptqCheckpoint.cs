using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Quantization.Gptq;

/// <summary>
/// Writes a model whose linear layers hold GPTQ quantizations (<see cref="GptqLayers"/>) as a GPTQ folder laid out
/// like its source folder: each GPTQ layer as <c>qweight</c>, <c>qzeros</c>, <c>scales</c>, <c>g_idx</c> under the
/// layer's checkpoint name (bias and every other tensor as in the source, in the source's dtypes), config.json with
/// the GPTQ <c>quantization_config</c>, side files copied. Built under a temporary name and renamed into place.
/// </summary>
public static class GptqCheckpoint
{
    /// <summary>Saves <paramref name="model"/> (loaded from <paramref name="sourceDir"/>) to the new folder <paramref name="outDir"/>.</summary>
    public static void Save(CausalLM model, string sourceDir, string outDir, GptqConfig config)
    {
        if (!GptqLayers.Quantized(model).Any()) throw new PeftSharpException("the model has no GPTQ layers to save");
        AtomicDirectory.CreateNew(outDir, temp =>
        {
            WriteWeights(model, sourceDir, temp, config);
            WriteConfig(sourceDir, temp, config);
            ModelSaver.CopySideFiles(sourceDir, temp, "config.json");
        });
    }

    static void WriteWeights(CausalLM model, string sourceDir, string outDir, GptqConfig config)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        var names = new HashSet<string>(parameters.Keys);
        var modules = ModuleParameters.ModulesByPath(model);
        using var source = SafetensorsCheckpoint.Open(sourceDir);
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        var written = new HashSet<string>(StringComparer.Ordinal);
        long bytes = 0;

        // A linear weight with a GPTQ quantization, written as its four tensors under the layer's checkpoint name.
        bool TryQuantized(string weightName, string prefix)
        {
            var (owner, local) = ModuleParameters.Split(weightName);
            if (local != "weight" || modules[owner] is not Linear linear || GptqLayers.Of(linear) is not { } w) return false;
            if (!written.Add(prefix)) return true;
            using (var check = NewDisposeScope())
            {
                // A weight changed in full precision after quantization (e.g. a LoRA merged into it) would be lost here.
                var held = linear.WeightOutIn.to_type(ScalarType.Float32);
                var expected = w.Dequantize(linear.weight.dtype).to_type(ScalarType.Float32);
                if (held.sub(expected).abs().max().item<float>() > 1e-5f * (1 + expected.abs().max().item<float>()))
                    throw new PeftSharpException($"{owner}: the layer's weight no longer equals its GPTQ quantization (changed in full precision, e.g. an adapter merged into the weight); fold QA-LoRA adapters with QaLoraMerge instead");
            }
            foreach (var (suffix, t) in GptqFormat.Write(w, config, owner))
            {
                tensors.Add(new(prefix + "." + suffix, t));
                bytes += t.numel() * t.element_size();
            }
            return true;
        }

        foreach (var (key, info) in source.Tensors)
        {
            if (GptqFormat.LayerOf(key) is string prefix && model.ParameterNameFor(prefix + ".weight", names) is string layerWeight)
            {
                if (!TryQuantized(layerWeight, prefix))
                    throw new PeftSharpException($"{source.FilePathOf(key)}: layer '{prefix}' is GPTQ-quantized in the source but holds no GPTQ quantization now");
                continue;
            }
            if (model.ParameterNameFor(key, names) is string name)
            {
                if (key.EndsWith(".weight", StringComparison.Ordinal) && TryQuantized(name, key[..^".weight".Length])) continue;
                var target = ModelLoader.IsFloatingPoint(info.ScalarType) ? info.ScalarType : parameters[name].dtype;
                var value = parameters[name].detach().to_type(target).cpu().contiguous();
                tensors.Add(new(key, value));
                bytes += value.numel() * value.element_size();
                continue;
            }
            if (key == "lm_head.weight") tensors.Add(new(key, model.OutputEmbedding.detach().to_type(info.ScalarType).cpu())); // tied head saved by some exporters
            else tensors.Add(new(key, source.Read(key))); // buffers kept as they were (GPT-2's attn.bias)
            bytes += info.ByteLength;
        }
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        if (bytes > ModelSaver.MaxShardBytes) SafetensorsCheckpoint.SaveSharded(outDir, tensors, ModelSaver.MaxShardBytes, metadata);
        else SafetensorsWriter.Save(Path.Combine(outDir, SafetensorsCheckpoint.SingleFileName), tensors, metadata);
    }

    /// <summary>config.json as the source's, with the GPTQ quantization_config (written as transformers does: sorted keys, indent 2).</summary>
    static void WriteConfig(string sourceDir, string outDir, GptqConfig config)
    {
        string path = Path.Combine(sourceDir, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new PeftSharpException($"{path}: expected a JSON object");
        json["quantization_config"] = config.ToJson();
        File.WriteAllText(Path.Combine(outDir, "config.json"), PythonJson.Dumps(json) + "\n");
    }
}
