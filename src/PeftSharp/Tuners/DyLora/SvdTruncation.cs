using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.DyLora;

/// <summary>
/// The best rank-k approximation of a plain LoRA adapter: on every layer, the top-k singular factors of its
/// ΔW = s·B·A (Eckart–Young), added as a new adapter with lora_alpha = k (scaling 1). This is how ranks are
/// compared for adapters that were not trained with DyLoRA.
/// </summary>
public static class SvdTruncation
{
    /// <summary>
    /// Adds adapter <paramref name="newName"/>: adapter <paramref name="adapter"/>'s update B·A truncated to its top <paramref name="rank"/> singular values, split into rank-<paramref name="rank"/> factors.
    /// </summary>
    /// <exception cref="PeftSharpException">The adapter uses DoRA.</exception>
    public static void AddSvdTruncated(this LoraModel lora, string adapter, int rank, string newName)
    {
        var source = lora.Configs[adapter];
        if (source.UseDora) throw new PeftSharpException("rank truncation of DoRA adapters is not supported");
        var config = LoraConfig.FromJson(source.ToJson());
        config.R = rank;
        config.LoraAlpha = rank;
        config.UseRslora = false;
        config.RankPattern = new(StringComparer.Ordinal);
        config.AlphaPattern = new(StringComparer.Ordinal);
        config.InitLoraWeights = InitLoraWeights.True;
        lora.AddAdapter(newName, config, trainable: false);
        using var _ = no_grad();
        foreach (var layer in lora.LinearLayers.Values.Where(l => l.Adapters.ContainsKey(newName)))
        {
            using var scope = NewDisposeScope();
            var (u, s, vh) = linalg.svd(layer.DeltaWeight(adapter), fullMatrices: false);
            int k = (int)Math.Min(rank, s.shape[0]);
            var a = zeros(rank, vh.shape[1]);
            var b = zeros(u.shape[0], rank);
            a.narrow(0, 0, k).copy_(vh.narrow(0, 0, k));
            b.narrow(1, 0, k).copy_(u.narrow(1, 0, k).mul(s.narrow(0, 0, k).unsqueeze(0)));
            layer.A(newName).weight.copy_(a);
            layer.B(newName).weight.copy_(b);
        }
        foreach (var layer in lora.EmbeddingLayers.Values.Where(l => l.Adapters.ContainsKey(newName)))
        {
            using var scope = NewDisposeScope();
            var (u, s, vh) = linalg.svd(layer.DeltaWeight(adapter).t(), fullMatrices: false); // B·A orientation [dim, vocab]
            int k = (int)Math.Min(rank, s.shape[0]);
            layer.A(newName).zero_();
            layer.B(newName).zero_();
            layer.A(newName).narrow(0, 0, k).copy_(vh.narrow(0, 0, k));
            layer.B(newName).narrow(1, 0, k).copy_(u.narrow(1, 0, k).mul(s.narrow(0, 0, k).unsqueeze(0)));
        }
    }
}
