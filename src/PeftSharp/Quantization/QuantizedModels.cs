using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Quantization;

/// <summary>Quantizing and dequantizing the linear layers of a module tree in place, and what it then holds.</summary>
public static class QuantizedModels
{
    /// <summary>
    /// The layers a 4-bit load quantizes, as transformers' replace_with_bnb_linear: every linear layer except the
    /// skipped modules (by default the output head <c>lm_head</c>) and LoRA's own factors. Embeddings stay as they are.
    /// </summary>
    public static IEnumerable<(string Path, Linear Layer)> Quantizable(nn.Module root, BitsAndBytesConfig config) =>
        root.named_modules()
            .Where(m => m.module is Linear && !m.name.Split('.').Any(s => s.StartsWith("lora_", StringComparison.Ordinal)) && !config.Skips(m.name))
            .Select(m => (m.name, (Linear)m.module));

    /// <summary>The linear layers currently held in 4 bits.</summary>
    public static IEnumerable<(string Path, Linear Layer)> Quantized(nn.Module root) =>
        root.named_modules().Where(m => m.module is Linear { IsQuantized: true }).Select(m => (m.name, (Linear)m.module));

    /// <summary>Whether any Linear under <paramref name="root"/> is held in 4 bits.</summary>
    public static bool IsQuantized(nn.Module root) => Quantized(root).Any();

    /// <summary>Replaces a layer's full-precision weight by its 4-bit quantization (from the [out, in] matrix, also for Conv1D).</summary>
    public static void Quantize(Linear layer, FourBitOptions options, ScalarType computeDType)
    {
        if (layer.IsQuantized) throw new PeftSharpException("layer is already quantized");
        using var _ = no_grad();
        layer.ReplaceWeight(Quantized4BitWeight.Quantize(layer.WeightOutIn, options));
        layer.ComputeDType = computeDType;
    }

    /// <summary>Quantizes every layer <see cref="Quantizable"/> selects that is not 4-bit yet; returns how many.</summary>
    public static int Quantize(nn.Module root, BitsAndBytesConfig config)
    {
        int count = 0;
        foreach (var (_, layer) in Quantizable(root, config).ToList())
        {
            if (layer.IsQuantized) continue;
            Quantize(layer, config.Options, config.ComputeDType);
            count++;
        }
        return count;
    }

    /// <summary>
    /// For a model on the meta device: gives the layers a 4-bit load would quantize 4-bit weights of the right shapes
    /// (no memory), so parameter counts and sizes are those of the 4-bit model.
    /// </summary>
    public static int QuantizeMeta(nn.Module root, BitsAndBytesConfig config)
    {
        int count = 0;
        foreach (var (_, layer) in Quantizable(root, config).ToList())
        {
            if (layer.IsQuantized || layer.weight.device.type != DeviceType.META) continue;
            layer.ReplaceWeight(Quantized4BitWeight.Meta([layer.OutFeatures, layer.InFeatures], config.Options, layer.weight.dtype));
            layer.ComputeDType = config.ComputeDType;
            count++;
        }
        return count;
    }

    /// <summary>Gives a 4-bit layer a full-precision weight again (code·absmax, in <paramref name="dtype"/>, in the layer's layout).</summary>
    public static void Dequantize(Linear layer, ScalarType? dtype = null)
    {
        var state = layer.QuantState ?? throw new PeftSharpException("layer is not quantized");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var outIn = state.Dequantize(layer.weight, dtype ?? state.DType);
        layer.ReplaceWeight(null, layer.FanInFanOut ? outIn.t().contiguous() : outIn); // detached from the scope
    }

    /// <summary>Dequantizes every 4-bit layer (to each one's original dtype unless given); returns how many.</summary>
    public static int Dequantize(nn.Module root, ScalarType? dtype = null)
    {
        var layers = Quantized(root).ToList();
        foreach (var (_, layer) in layers) Dequantize(layer, dtype);
        return layers.Count;
    }

    /// <summary>
    /// A parameter's count as PEFT's get_nb_trainable_parameters reports it: a 4-bit weight (bitsandbytes' Params4bit,
    /// here a uint8 parameter of packed codes) counts numel × 2, its number of weights; everything else its numel.
    /// </summary>
    public static long PeftParameterCount(Tensor parameter) =>
        parameter.dtype == ScalarType.Byte ? 2 * parameter.numel() : parameter.numel();

    /// <summary>Bytes held by parameters plus 4-bit quant states (what the weights cost in memory).</summary>
    public static long WeightBytes(nn.Module root)
    {
        long bytes = root.parameters().Sum(p => p.numel() * p.element_size());
        foreach (var (_, layer) in Quantized(root))
            bytes += layer.QuantState!.StorageBytes - layer.weight.numel(); // packed codes already counted
        return bytes;
    }
}
