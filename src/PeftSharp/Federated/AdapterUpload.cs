using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Federated;

/// <summary>
/// Reads an adapter a client sent (PEFT's <c>adapter_model.safetensors</c>: <c>base_model.model.{path}.lora_A.weight</c>
/// and <c>.lora_B.weight</c> per layer) into <see cref="LoraFactors"/> laid out like the global adapter. Anything else
/// — an unknown or missing tensor, another shape, NaN or infinity — is a one-line error naming the tensor, so a bad
/// upload is refused before it can reach an aggregate.
/// </summary>
public static class AdapterUpload
{
    /// <summary>The PEFT key of a layer's factor A or B.</summary>
    public static string Key(string path, bool a) => $"{AdapterFiles.Prefix}{path}.lora_{(a ? 'A' : 'B')}.weight";

    /// <param name="file">The uploaded safetensors file.</param>
    /// <param name="layout">The global adapter: which layers and shapes to expect.</param>
    /// <param name="label">Names the upload in messages (e.g. "client c1, round 3").</param>
    public static LoraFactors Read(string file, LoraFactors layout, string label)
    {
        using var f = SafetensorsFile.Open(file);
        var expected = new Dictionary<string, (string Path, bool A, long[] Shape)>(StringComparer.Ordinal);
        foreach (var (path, (a, b)) in layout.Layers)
        {
            expected[Key(path, true)] = (path, true, a.shape);
            expected[Key(path, false)] = (path, false, b.shape);
        }
        foreach (var (key, info) in f.Tensors)
        {
            if (!expected.TryGetValue(key, out var slot))
                throw new PeftSharpException($"{label}: tensor '{key}' is not a LoRA factor of the global adapter");
            if (!info.Shape.SequenceEqual(slot.Shape))
                throw new PeftSharpException($"{label}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", slot.Shape)}]");
        }
        var missing = expected.Keys.Where(k => !f.Tensors.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        if (missing.Count > 0)
            throw new PeftSharpException($"{label}: missing tensor '{missing[0]}'" + (missing.Count > 1 ? $" and {missing.Count - 1} more" : ""));
        var layers = new Dictionary<string, (Tensor A, Tensor B)>(StringComparer.Ordinal);
        var result = new LoraFactors(layers);
        try
        {
            foreach (var (path, _) in layout.Layers)
            {
                var a = LoraFactors.Keep(Finite(f, Key(path, true), label));
                var b = LoraFactors.Keep(Finite(f, Key(path, false), label));
                layers[path] = (a, b);
            }
        }
        catch
        {
            result.Dispose();
            throw;
        }
        return result;
    }

    static Tensor Finite(SafetensorsFile f, string key, string label)
    {
        var t = f.Read(key, CPU, ScalarType.Float32);
        if (!t.isfinite().all().item<bool>())
        {
            t.Dispose();
            throw new PeftSharpException($"{label}: tensor '{key}' holds NaN or infinite values");
        }
        return t;
    }
}
