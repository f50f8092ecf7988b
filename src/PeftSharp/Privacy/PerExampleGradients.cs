using PeftSharp.Tuners.Lora;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Privacy;

/// <summary>
/// Per-example gradients of LoRA factors without a loop over examples. For y = s·B·A·x summed over positions t of
/// example n, the gradient of example n's loss is ∂B_n = Σ_t g_{n,t} ⊗ (A x_{n,t}) and ∂A_n = Σ_t (Bᵀ g_{n,t}) ⊗ x_{n,t},
/// where g is the loss gradient with respect to B·A·x (including s). Both are one batched matrix product per layer:
/// ∂B = gᵀ·u and ∂A = (Bᵀg)ᵀ·x over [N, T, ·] tensors, with u = A·x.
/// </summary>
/// <remarks>
/// <para>While attached, every plain-LoRA path computes u = A·x + 0_u and z = B·u + 0_z with zero leaf tensors 0_u,
/// 0_z that require grad: after backward their gradients are exactly ∂L/∂u and ∂L/∂z at every position, and x and u
/// are kept (they are held by autograd anyway). <see cref="Collect"/> turns them into per-example gradients
/// [N, …parameter shape] for every trainable lora_A / lora_B (and lora_B bias).</para>
/// <para>Examples must not interact in the forward pass (true for causal LMs; there is no batch norm), and each LoRA
/// layer must run once per forward (no gradient checkpointing, which recomputes forwards).</para>
/// </remarks>
public sealed class PerExampleGradients : ILoraGradientTap, IDisposable
{
    sealed record Record(Tensor X, Tensor U, Tensor LeafU, Tensor LeafZ, Parameter A, Parameter B, Parameter? Bias) : IDisposable
    {
        public void Dispose()
        {
            X.Dispose();
            U.Dispose();
            LeafU.Dispose();
            LeafZ.Dispose();
        }
    }

    readonly LoraModel lora;
    readonly List<Record> records = [];

    /// <summary>Attaches to every LoRA linear layer of <paramref name="lora"/>.</summary>
    /// <exception cref="PeftSharpException">A trainable parameter is not a lora_A / lora_B of a plain LoRA linear layer.</exception>
    public PerExampleGradients(LoraModel lora, IEnumerable<(string Name, Parameter Param)> trainable)
    {
        this.lora = lora;
        var covered = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
        foreach (var layer in lora.LinearLayers.Values)
            foreach (var (adapter, s) in layer.Adapters)
            {
                if (s.UseDora) continue;
                covered.Add(layer.A(adapter).weight);
                covered.Add(layer.B(adapter).weight);
                if (layer.B(adapter).bias is Parameter bias) covered.Add(bias);
            }
        foreach (var (name, p) in trainable)
            if (!covered.Contains(p))
                throw new PeftSharpException($"DP-SGD: per-example gradients are computed for LoRA factors of linear layers only; trainable parameter '{name}' is not one (use --method lora without modules_to_save or embedding targets)");
        foreach (var layer in lora.LinearLayers.Values) layer.GradientTap = this;
    }

    /// <summary>
    /// The LoRA term of <paramref name="layer"/> for <paramref name="x"/>, computed so that each example's gradient of A and B can be read (called by the layer's forward while training with DP-SGD).
    /// </summary>
    public Tensor LoraPath(LoraLinear layer, string adapter, Tensor x)
    {
        Parameter a = layer.A(adapter).weight, b = layer.B(adapter).weight;
        var bias = layer.B(adapter).bias;
        double scaling = layer.Adapters[adapter].Scaling;
        if (layer.RankOf(adapter) != layer.Adapters[adapter].Rank)
            throw new PeftSharpException("DP-SGD: adapters at a truncated rank (DyLoRA) are not supported");
        if (!a.requires_grad && !b.requires_grad && bias is not { requires_grad: true })
            return nn.functional.linear(nn.functional.linear(x, a), b, bias).mul_(scaling);
        var x3 = x.dim() == 3 ? x : x.reshape(x.shape[0], -1, x.shape[^1]);
        var leafU = zeros([x3.shape[0], x3.shape[1], a.shape[0]], a.dtype, x.device).requires_grad_(true);
        var u = nn.functional.linear(x3, a).add(leafU);
        var leafZ = zeros([x3.shape[0], x3.shape[1], b.shape[0]], b.dtype, x.device).requires_grad_(true);
        var z = nn.functional.linear(u, b, bias).add(leafZ);
        var record = new Record(x3.detach(), u.detach(), leafU, leafZ, a, b, bias);
        foreach (var t in new[] { record.X, record.U, leafU, leafZ }) t.DetachFromDisposeScope();
        records.Add(record);
        return z.mul(scaling).reshape([.. x.shape[..^1], b.shape[0]]);
    }

    /// <summary>
    /// Per-example gradients [N, …shape] of the trainable LoRA parameters after the backward pass of a sum of
    /// per-example losses (the tensors are created in the caller's dispose scope), then forgets the forward's records.
    /// A parameter used by several forwards since the last call gets the sum.
    /// </summary>
    public Dictionary<Parameter, Tensor> Collect()
    {
        var result = new Dictionary<Parameter, Tensor>(ReferenceEqualityComparer.Instance);
        void Add(Parameter p, Tensor g) => result[p] = result.TryGetValue(p, out var old) ? old.add(g) : g;
        using (no_grad())
        {
            foreach (var r in records)
            {
                using var gz = r.LeafZ.grad;   // ∂L/∂(B·A·x) · s    [N, T, out]
                using var gu = r.LeafU.grad;   // ∂L/∂(A·x)          [N, T, r]
                if (gz is null || gu is null) continue; // not reached by the loss
                if (r.B.requires_grad) Add(r.B, gz.transpose(1, 2).bmm(r.U));   // [N, out, r]
                if (r.A.requires_grad) Add(r.A, gu.transpose(1, 2).bmm(r.X));   // [N, r, in]
                if (r.Bias is { requires_grad: true } bias) Add(bias, gz.sum(1));
            }
        }
        Clear();
        return result;
    }

    /// <summary>Forgets what the forwards since the last <see cref="Collect"/> recorded.</summary>
    public void Clear()
    {
        foreach (var r in records) r.Dispose();
        records.Clear();
    }

    /// <summary>Detaches from the layers; they compute their LoRA path as before.</summary>
    public void Dispose()
    {
        Clear();
        foreach (var layer in lora.LinearLayers.Values)
            if (ReferenceEquals(layer.GradientTap, this)) layer.GradientTap = null;
    }
}
