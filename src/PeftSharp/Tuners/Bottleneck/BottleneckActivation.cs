using static TorchSharp.torch;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// The non-linearities a bottleneck adapter may name: transformers' <c>ACT2FN</c> keys (LLM-Adapters looks the name up
/// there as written; its default is <c>tanh</c>) and AdapterHub's spelling (it lower-cases the name first and adds
/// <c>leakyrelu</c>). Written by hand because the model's own activation table covers only what the base models use.
/// </summary>
public static class BottleneckActivation
{
    static readonly string[] Known =
    [
        "relu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "silu", "swish", "tanh",
        "sigmoid", "leaky_relu", "leakyrelu", "relu6", "linear",
    ];

    /// <summary>Throws a one-line error naming <paramref name="where"/> when the name is not supported.</summary>
    public static void Check(string name, string where)
    {
        if (!Known.Contains(name))
            throw new PeftSharpException($"{where}: non_linearity \"{name}\" is not supported (expected one of {string.Join(", ", Known)})");
    }

    /// <summary>Applies the fork's non-linearity named <paramref name="name"/>.</summary>
    public static Tensor Apply(string name, Tensor x) => name switch
    {
        "relu" => nn.functional.relu(x),
        "gelu" => nn.functional.gelu(x),
        "gelu_new" or "gelu_fast" or "gelu_pytorch_tanh" => nn.functional.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        "quick_gelu" => x.mul(x.mul(1.702).sigmoid_()),
        "silu" or "swish" => nn.functional.silu(x),
        "tanh" => x.tanh(),
        "sigmoid" => x.sigmoid(),
        "leaky_relu" or "leakyrelu" => nn.functional.leaky_relu(x, 0.01),
        "relu6" => nn.functional.relu6(x),
        "linear" => x.alias(),
        _ => throw new PeftSharpException($"non_linearity \"{name}\" is not supported"),
    };
}
