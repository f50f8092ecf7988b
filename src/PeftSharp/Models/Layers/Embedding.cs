using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>A lookup table with HF's parameter name <c>weight</c> [num_embeddings, dim].</summary>
public sealed class Embedding : TunableLayer
{
    /// <summary>The table [num_embeddings, dim].</summary>
    public Parameter weight;

    /// <summary>A table of <paramref name="count"/> rows of <paramref name="dim"/> values, uninitialised (torch.empty).</summary>
    public Embedding(long count, long dim, ScalarType dtype, Device? device) : base(nameof(Embedding))
    {
        weight = new Parameter(empty([count, dim], dtype, device));
        RegisterComponents();
    }

    /// <inheritdoc/>
    protected override Tensor LayerForward(Tensor ids)
    {
        long[] shape = [.. ids.shape, weight.shape[1]];
        return weight.index_select(0, ids.reshape(-1)).view(shape);
    }
}
