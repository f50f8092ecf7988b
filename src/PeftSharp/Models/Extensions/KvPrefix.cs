using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Extension point 3: per-layer attention key/value prefixes (prefix tuning, P-tuning v2). The keys and values are
/// put in front of the layer's own keys and values, as transformers treats <c>past_key_values</c>: every query sees
/// them, they are not rotated (Llama) and the real tokens take the positions after them (GPT-2's position embedding
/// and Llama's rotary position start at the prefix length). With a <see cref="KvCache"/> they enter the cache on the
/// first forward only. Attention masks given by callers cover the real tokens; the model marks prefix positions visible.
/// </summary>
public interface IKvPrefix
{
    /// <summary>Number of prefix positions (the same for every layer).</summary>
    int Length { get; }

    /// <summary>Keys and values for <paramref name="layer"/>, each [batch or 1, kvHeads, Length, headDim].</summary>
    (Tensor Keys, Tensor Values) For(int layer, long batch, ScalarType dtype, Device device);
}
