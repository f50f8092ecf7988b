using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// A decoder-only language model (GPT-2 or the Llama family). Parameters carry Hugging Face's names, so
/// <c>named_parameters()</c> lines up with checkpoint keys. The forward is split so callers that need
/// only part of the vocabulary projection (chunked losses, last-token sampling) can skip the rest.
/// </summary>
public abstract class CausalLM : nn.Module<Tensor, Tensor>
{
    protected CausalLM(string name, ModelConfig config, ScalarType dtype, Device device) : base(name)
    {
        Config = config;
        DType = dtype;
        Device = device;
        Extensions = new ExtensionPoints(this, config.Layers);
    }

    /// <summary>The places where tuning methods act (wrapped layers, sub-layer hooks, prefixes, input rewrite, taps).</summary>
    public ExtensionPoints Extensions { get; }

    /// <summary>The decoder blocks in order (GPT-2's <c>transformer.h</c>, Llama's <c>model.layers</c>).</summary>
    public abstract IReadOnlyList<DecoderBlock> Blocks { get; }

    public ModelConfig Config { get; }
    public ScalarType DType { get; }

    /// <summary>Real tokens one sequence may hold: the context less the positions prefixes and virtual tokens take in front.</summary>
    public int TokenContext => Config.ContextLength - Extensions.LeadingPositions;
    public Device Device { get; internal set; }

    /// <summary>The final, normalised hidden states [B, T, hidden].</summary>
    public abstract Tensor Hidden(Tensor inputIds, KvCache? cache = null, Tensor? attentionMask = null);

    /// <summary>
    /// Recompute each block's activations during backward instead of keeping them (<see cref="GradientCheckpoint"/>).
    /// Applies only while gradients are recorded and no KV cache is used; results are unchanged.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>The output-embedding matrix [vocab, hidden] (the input embedding when tied).</summary>
    public abstract Tensor OutputEmbedding { get; }

    /// <summary>Vocabulary logits for hidden states [.., hidden] → [.., vocab].</summary>
    public virtual Tensor Logits(Tensor hidden) => nn.functional.linear(hidden, OutputEmbedding);

    /// <summary>Logits [B, T, vocab] for token ids [B, T].</summary>
    public override Tensor forward(Tensor inputIds) => Forward(inputIds);

    public Tensor Forward(Tensor inputIds, KvCache? cache = null, Tensor? attentionMask = null)
    {
        using var scope = NewDisposeScope();
        return Logits(Hidden(inputIds, cache, attentionMask)).MoveToOuterDisposeScope();
    }

    public KvCache NewCache() => new(Config.Layers);

    /// <summary>Checkpoint keys that this model ignores if present (non-persistent buffers of older exports).</summary>
    public virtual bool IsIgnorableCheckpointKey(string key) => false;

    /// <summary>Maps a checkpoint key to this model's parameter name, or null when it names nothing here.</summary>
    public virtual string? ParameterNameFor(string checkpointKey, ISet<string> parameterNames) =>
        parameterNames.Contains(checkpointKey) ? checkpointKey : null;

    /// <summary>Random initialisation as transformers' <c>_init_weights</c> (normal(0, 0.02), zero biases, unit norms).</summary>
    public abstract void InitializeWeights(long seed);

    protected static void InitNormal(Parameter p, double std, Generator gen)
    {
        using var _ = no_grad();
        using var tmp = randn(p.shape, ScalarType.Float32, generator: gen).mul_(std);
        p.copy_(tmp);
    }

    protected static void Fill(Parameter? p, double value)
    {
        if (p is null) return;
        using var _ = no_grad();
        p.fill_(value);
    }
}
