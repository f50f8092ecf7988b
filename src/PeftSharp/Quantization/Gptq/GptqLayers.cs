using System.Runtime.CompilerServices;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Quantization.Gptq;

/// <summary>
/// The GPTQ quantization held for linear layers. A GPTQ layer keeps its ordinary weight parameter holding the
/// dequantized values (in the layer's dtype and layout), so every tuner sees a plain linear layer, and this table keeps
/// the integer codes, scales and zero points it came from, for writing GPTQ folders and folding QA-LoRA adapters.
/// </summary>
public static class GptqLayers
{
    static readonly ConditionalWeakTable<Linear, GptqWeight> States = new();

    /// <summary>The GPTQ quantization of <paramref name="layer"/>, or null when it holds none.</summary>
    public static GptqWeight? Of(Linear layer) => States.TryGetValue(layer, out var w) ? w : null;

    /// <summary>Gives <paramref name="layer"/> a quantization: its weight becomes the dequantized values (in its dtype and layout).</summary>
    public static void Set(Linear layer, GptqWeight quantized)
    {
        if (layer.IsQuantized) throw new PeftSharpException("a 4-bit (bitsandbytes) layer cannot hold a GPTQ quantization");
        if (quantized.OutFeatures != layer.OutFeatures || quantized.InFeatures != layer.InFeatures)
            throw new PeftSharpException($"a GPTQ weight [{quantized.OutFeatures}, {quantized.InFeatures}] does not fit a [{layer.OutFeatures}, {layer.InFeatures}] linear layer");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var outIn = quantized.Dequantize(ScalarType.Float32).to(layer.weight.dtype, layer.weight.device);
        layer.weight.copy_(layer.FanInFanOut ? outIn.t() : outIn);
        if (States.TryGetValue(layer, out var old) && !ReferenceEquals(old, quantized)) { States.Remove(layer); old.Dispose(); }
        States.AddOrUpdate(layer, quantized);
    }

    /// <summary>Forgets a layer's quantization (its weight keeps its values).</summary>
    public static void Remove(Linear layer)
    {
        if (States.TryGetValue(layer, out var old)) { States.Remove(layer); old.Dispose(); }
    }

    /// <summary>The GPTQ layers under <paramref name="root"/>, by module path.</summary>
    public static IEnumerable<(string Path, Linear Layer, GptqWeight Weight)> Quantized(nn.Module root) =>
        root.named_modules().Where(m => m.module is Linear l && States.TryGetValue(l, out _))
            .Select(m => (m.name, (Linear)m.module, States.TryGetValue((Linear)m.module, out var w) ? w : null!));

    /// <summary>
    /// The layers a GPTQ model quantizes: every linear layer except the output head <c>lm_head</c> and LoRA's own factors.
    /// </summary>
    public static IEnumerable<(string Path, Linear Layer)> Quantizable(nn.Module root) =>
        root.named_modules()
            .Where(m => m.module is Linear && !m.name.Split('.').Any(s => s.StartsWith("lora_", StringComparison.Ordinal)) && m.name.Split('.')[^1] != "lm_head")
            .Select(m => (m.name, (Linear)m.module));

    /// <summary>
    /// Quantizes every <see cref="Quantizable"/> layer that holds no GPTQ quantization yet with
    /// <see cref="GptqWeight.Quantize"/> (round-to-nearest, asymmetric, contiguous groups); returns how many.
    /// </summary>
    public static int QuantizeRoundToNearest(nn.Module root, int bits, long groupSize)
    {
        int count = 0;
        foreach (var (path, layer) in Quantizable(root).ToList())
        {
            if (Of(layer) is not null) continue;
            if (layer.InFeatures % groupSize != 0)
                throw new PeftSharpException($"group size {groupSize} does not divide in_features {layer.InFeatures} of {path}");
            using var scope = NewDisposeScope();
            Set(layer, GptqWeight.Quantize(layer.WeightOutIn, bits, groupSize));
            count++;
        }
        return count;
    }
}
