using PeftSharp.Tuners.Prompts;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Attempt;

/// <summary>
/// One ATTEMPT adapter: the trainable target prompt <c>embedding.weight</c> [N, D], the frozen
/// <c>source_prompts</c> [K, N, D] (a buffer: never trained) and the attention network <c>attn_W_down</c> (D → h,
/// no bias), SiLU, <c>attn_W_up</c> (h → D, no bias), <c>layer_norm</c> (D). <see cref="PromptModule.Output"/> is
/// the target prompt alone.
/// </summary>
public sealed class AttemptPromptModule : PromptModule
{
    readonly Embedding embedding;
    readonly Linear attn_W_down;
    readonly Linear attn_W_up;
    readonly LayerNorm layer_norm;
    readonly double temperature;

    /// <summary>
    /// A module holding <paramref name="target"/> [N, D] and <paramref name="sources"/> [K, N, D]; the projections start
    /// as torch.nn.Linear does (U(±1/√in)) from <paramref name="gen"/>, the layer norm as weight 1, bias 0.
    /// </summary>
    public AttemptPromptModule(Tensor target, Tensor sources, int hidden, double temperature, Generator? gen) : base(nameof(AttemptPromptModule))
    {
        long n = target.shape[0], d = target.shape[1];
        var device = target.device;
        if (sources.dim() != 3 || sources.shape[1] != n || sources.shape[2] != d)
            throw new PeftSharpException($"ATTEMPT: source prompts [{string.Join(", ", sources.shape)}] do not fit the target prompt [{n}, {d}]");
        embedding = nn.Embedding(n, d, dtype: ScalarType.Float32, device: device);
        using (no_grad()) embedding.weight!.copy_(target);
        attn_W_down = DefaultInit.Linear(d, hidden, gen, device, hasBias: false);
        attn_W_up = DefaultInit.Linear(hidden, d, gen, device, hasBias: false);
        layer_norm = nn.LayerNorm(d, dtype: ScalarType.Float32, device: device);
        this.temperature = temperature;
        RegisterComponents();
        register_buffer("source_prompts", sources.to(ScalarType.Float32, device).clone());
    }

    /// <inheritdoc/>
    public override Parameter EmbeddingWeight => embedding.weight!;
    /// <inheritdoc/>
    public override bool Direct => true;
    /// <inheritdoc/>
    protected override Tensor Encode(Tensor e) => e;

    /// <summary>The frozen source prompts [K, N, D].</summary>
    public Tensor SourcePrompts => named_buffers().First(b => b.name == "source_prompts").buffer;
    /// <summary>W_down [h, D] (torch.nn.Linear layout).</summary>
    public Parameter DownWeight => attn_W_down.weight!;
    /// <summary>W_up [D, h].</summary>
    public Parameter UpWeight => attn_W_up.weight!;
    /// <summary>The layer norm's weight [D].</summary>
    public Parameter NormWeight => layer_norm.weight!;
    /// <summary>The layer norm's bias [D].</summary>
    public Parameter NormBias => layer_norm.bias!;
    /// <summary>The softmax temperature.</summary>
    public double Temperature => temperature;

    /// <summary>
    /// The attention weights [B, K+1] over [sources…, target] for input embeddings [B, T, D]; <paramref name="mask"/>
    /// [B, T] (1 real, 0 padding) keeps padding out of the max-pool.
    /// </summary>
    public Tensor Attention(Tensor inputEmbeddings, Tensor? mask = null)
    {
        using var scope = NewDisposeScope();
        var x = inputEmbeddings.to(ScalarType.Float32);
        if (mask is not null)
            x = x.masked_fill(mask.to(x.device).eq(0).unsqueeze(-1), double.NegativeInfinity);
        var pooled = x.max(1).values;                                                   // [B, D]
        var h = layer_norm.forward(attn_W_up.forward(nn.functional.silu(attn_W_down.forward(pooled))));
        var keys = All().max(1).values;                                                  // [K+1, D]
        var scores = h.matmul(keys.t()).div(temperature);
        return scores.softmax(-1).MoveToOuterDisposeScope();
    }

    /// <summary>Sources then target, [K+1, N, D].</summary>
    Tensor All() => cat([SourcePrompts, embedding.weight!.unsqueeze(0)], 0);

    /// <summary>The prompt of each sequence, [B, N, D]: target + Σ_j a_j · P_j over [sources…, target].</summary>
    public Tensor Prompts(Tensor inputEmbeddings, Tensor? mask = null)
    {
        using var scope = NewDisposeScope();
        var a = Attention(inputEmbeddings, mask);
        var mixed = einsum("bk,knd->bnd", a, All());
        return mixed.add(embedding.weight!.unsqueeze(0)).MoveToOuterDisposeScope();
    }
}
