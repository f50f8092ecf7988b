using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>transformers' ACT2FN names for the activations our model families use.</summary>
public static class Activations
{
    static readonly string[] Known = ["gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "relu", "silu", "swish"];

    /// <summary>
    /// Checks that <paramref name="name"/> is a supported activation; <paramref name="where"/> names the config field in the message.
    /// </summary>
    /// <exception cref="PeftSharpException">The activation is not one of gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu, silu, swish.</exception>
    public static void Check(string name, string where)
    {
        if (!Known.Contains(name))
            throw new PeftSharpException($"{where}: activation \"{name}\" is not supported (expected one of {string.Join(", ", Known)})");
    }

    /// <summary>
    /// Applies the activation named as in transformers' ACT2FN (gelu_new, gelu_pytorch_tanh and gelu_fast are the tanh approximation).
    /// </summary>
    public static Tensor Apply(string name, Tensor x) => name switch
    {
        // gelu_new is the tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => nn.functional.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        "gelu" => nn.functional.gelu(x),
        "relu" => nn.functional.relu(x),
        "silu" or "swish" => nn.functional.silu(x),
        _ => throw new PeftSharpException($"activation \"{name}\" is not supported"),
    };
}
