using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Prompts;

/// <summary>
/// One soft-prompt adapter's module (PEFT's <c>prompt_encoder[adapter]</c>): an <c>embedding</c> and, while training a
/// reparameterised method, the network that turns it into the prompt. <see cref="Output"/> is what PEFT's
/// <c>get_prompt</c> computes for one sequence and what <c>save_pretrained</c> writes as <c>prompt_embeddings</c>.
/// An adapter loaded from a folder holds that output in <c>embedding</c> alone (PEFT's inference mode).
/// </summary>
public abstract class PromptModule : nn.Module
{
    /// <summary>Names the module (<paramref name="name"/>).</summary>
    protected PromptModule(string name) : base(name) { }

    /// <summary>The learned or loaded embedding table (PEFT's <c>embedding.weight</c>).</summary>
    public abstract Parameter EmbeddingWeight { get; }

    /// <summary>True when only <see cref="EmbeddingWeight"/> exists and is the output (loaded folders, no reparameterisation).</summary>
    public abstract bool Direct { get; }

    /// <summary>The prompt for one sequence: [N, token_dim] virtual embeddings, or [N, num_layers·2·token_dim] prefixes.</summary>
    public Tensor Output() => Direct ? EmbeddingWeight : Encode(EmbeddingWeight);

    /// <summary>The reparameterisation applied to the embedding table (only called when not <see cref="Direct"/>).</summary>
    protected abstract Tensor Encode(Tensor embedding);

    /// <summary>An embedding table module named <c>embedding</c> with PEFT's <c>torch.nn.Embedding</c> default init N(0, 1).</summary>
    internal static Embedding NewEmbedding(long rows, long dim, Generator? gen, Device device) => DefaultInit.Embedding(rows, dim, gen, device);

    /// <summary>torch.nn.Linear with its default init (kaiming_uniform a=√5: U(±1/√in) for weight and bias), drawn from <paramref name="gen"/>.</summary>
    internal static Linear NewLinear(long input, long output, Generator? gen, Device device) => DefaultInit.Linear(input, output, gen, device);
}

/// <summary>PEFT's <c>PromptEmbedding</c> (prompt tuning): the prompt is the embedding table itself, [N, token_dim].</summary>
public sealed class PromptEmbedding : PromptModule
{
    readonly Embedding embedding;

    /// <summary>A table holding <paramref name="initial"/> [virtual tokens, token_dim], float32.</summary>
    public PromptEmbedding(Tensor initial) : base(nameof(PromptEmbedding))
    {
        embedding = nn.Embedding(initial.shape[0], initial.shape[1], dtype: ScalarType.Float32, device: initial.device);
        using (no_grad()) embedding.weight!.copy_(initial);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Parameter EmbeddingWeight => embedding.weight!;
    /// <inheritdoc/>
    public override bool Direct => true;
    /// <inheritdoc/>
    protected override Tensor Encode(Tensor e) => e;
}

/// <summary>
/// PEFT's <c>PromptEncoder</c> (P-tuning). Training: <c>embedding</c> [N, token_dim] through <c>mlp_head</c>
/// (Linear(D, E), ReLU, Linear(E, E), ReLU, Linear(E, D)) or through a bidirectional <c>lstm_head</c>
/// (encoder_num_layers layers, hidden E; <see cref="BidirectionalLstm"/>) and <c>mlp_head</c> (Linear(2E, 2E), ReLU, Linear(2E, D)).
/// Loaded (inference): <c>embedding</c> holds the encoder's output.
/// </summary>
public sealed class PromptEncoder : PromptModule
{
    readonly Embedding embedding;
    readonly Sequential? mlp_head;
    readonly BidirectionalLstm? lstm_head;

    /// <summary>
    /// P-tuning's encoder for <paramref name="config"/>: an embedding and, when training (<paramref name="inference"/> false), its MLP or LSTM head; initialised from <paramref name="gen"/> on <paramref name="device"/>.
    /// </summary>
    public PromptEncoder(PromptEncoderConfig config, bool inference, Generator? gen, Device device) : base(nameof(PromptEncoder))
    {
        long n = config.TotalVirtualTokens, d = config.TokenDim!.Value, e = config.EncoderHiddenSize ?? d;
        embedding = NewEmbedding(n, d, gen, device);
        if (!inference)
        {
            if (config.EncoderReparameterizationType == "LSTM")
            {
                lstm_head = new BidirectionalLstm("lstm_head", d, e, config.EncoderNumLayers, config.EncoderDropout, device);
                lstm_head.ResetParameters(gen);
                mlp_head = nn.Sequential(NewLinear(2 * e, 2 * e, gen, device), nn.ReLU(), NewLinear(2 * e, d, gen, device));
            }
            else
            {
                mlp_head = nn.Sequential(NewLinear(d, e, gen, device), nn.ReLU(), NewLinear(e, e, gen, device), nn.ReLU(), NewLinear(e, d, gen, device));
            }
        }
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Parameter EmbeddingWeight => embedding.weight!;
    /// <inheritdoc/>
    public override bool Direct => mlp_head is null;

    /// <inheritdoc/>
    protected override Tensor Encode(Tensor e)
    {
        if (lstm_head is not null)
        {
            using var output = lstm_head.forward(e);
            return mlp_head!.forward(output);
        }
        return mlp_head!.forward(e);
    }
}

/// <summary>
/// PEFT's <c>PrefixEncoder</c> (prefix tuning / P-tuning v2). Without projection, or loaded: <c>embedding</c>
/// [N, num_layers·2·token_dim] holds every layer's keys and values. With <c>prefix_projection</c> while training:
/// <c>embedding</c> [N, token_dim] through <c>transform</c> (Linear(D, E), Tanh, Linear(E, num_layers·2·D)).
/// </summary>
public sealed class PrefixEncoder : PromptModule
{
    readonly Embedding embedding;
    readonly Sequential? transform;

    /// <summary>
    /// Prefix tuning's encoder for <paramref name="config"/>: an embedding of num_layers·2·token_dim per virtual token or, with prefix_projection when training, a token_dim embedding and a tanh MLP; initialised from <paramref name="gen"/> on <paramref name="device"/>.
    /// </summary>
    public PrefixEncoder(PrefixTuningConfig config, bool inference, Generator? gen, Device device) : base(nameof(PrefixEncoder))
    {
        long n = config.NumVirtualTokens!.Value, d = config.TokenDim!.Value, flat = config.NumLayers!.Value * 2L * d;
        bool zero = config.InitWeights == "zero";
        if (config.PrefixProjection && !inference)
        {
            long e = config.EncoderHiddenSize ?? d;
            embedding = NewEmbedding(n, d, gen, device);
            var last = NewLinear(e, flat, gen, device);
            transform = nn.Sequential(NewLinear(d, e, gen, device), nn.Tanh(), last);
            if (zero)
                using (no_grad()) { last.weight!.zero_(); last.bias!.zero_(); }
        }
        else
        {
            embedding = NewEmbedding(n, flat, gen, device);
            if (zero) using (no_grad()) embedding.weight!.zero_();
        }
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Parameter EmbeddingWeight => embedding.weight!;
    /// <inheritdoc/>
    public override bool Direct => transform is null;
    /// <inheritdoc/>
    protected override Tensor Encode(Tensor e) => transform!.forward(e);
}
