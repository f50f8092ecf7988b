using PeftSharp.Models;
using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;
using LayerNorm = PeftSharp.Models.Layers.LayerNorm;

namespace PeftSharp.Tuners.SideTuning;

/// <summary>
/// One side-network adapter: down-projections of the backbone's hidden states, blocks of the backbone's family at
/// width hidden/r, a final norm, the up-projection to the hidden size, and the ladder gates (LST) or the blend (side
/// tuning). Parameters are float32 and named <c>downsamples.{i}.weight</c>, <c>gates</c>, <c>h.{i}.…</c> (GPT-2) or
/// <c>layers.{i}.…</c> (Llama family), <c>ln_f.…</c> / <c>norm.weight</c>, <c>upsample.weight</c>, <c>blend</c>.
/// </summary>
public sealed class SideNetwork : nn.Module
{
    readonly List<Linear> downsamples;
    readonly List<DecoderBlock> blocks;
    readonly nn.Module<Tensor, Tensor> finalNorm;
    readonly RotaryEmbedding? rope;

    /// <summary>Down-projections hidden → hidden/r: one per tap for LST (embeddings and after every block), one for side tuning.</summary>
    public IReadOnlyList<Linear> Downsamples => downsamples;
    /// <summary>The side blocks, one per backbone block.</summary>
    public IReadOnlyList<DecoderBlock> Blocks => blocks;
    /// <summary>Up-projection hidden/r → hidden (no bias).</summary>
    public Linear Upsample { get; }
    /// <summary>LST's gate logits α_i, one per block ([layers]); null for side tuning.</summary>
    public Parameter? Gates { get; }
    /// <summary>Side tuning's blend logit ([1]; α = sigmoid(blend)); null for LST.</summary>
    public Parameter? Blend { get; }
    /// <summary>LST's gate temperature T.</summary>
    public double Temperature { get; }
    /// <summary>The side network's own model config (widths divided by r).</summary>
    public ModelConfig SideConfig { get; }
    /// <summary>Whether this is a ladder (LST) network.</summary>
    public bool Ladder => Gates is not null;

    /// <summary>The side network for <paramref name="model"/> under <paramref name="config"/>, initialised (or zeros when <paramref name="inference"/>).</summary>
    public SideNetwork(CausalLM model, SideNetworkConfig config, bool inference, Generator gen) : base("side_network")
    {
        var c = model.Config;
        int r = config.ReductionFactor, layers = c.Layers, side = c.Hidden / r;
        SideConfig = Reduced(c, r);
        var device = model.Device;
        const ScalarType f32 = ScalarType.Float32;
        bool ladder = config is LstConfig;
        int taps = ladder ? layers + 1 : 1;
        downsamples = Enumerable.Range(0, taps).Select(_ => new Linear(c.Hidden, side, hasBias: true, fanInFanOut: false, f32, device)).ToList();
        register_module("downsamples", nn.ModuleList(downsamples.ToArray()));
        var sideExtensions = new ExtensionPoints(model, layers);
        blocks = Enumerable.Range(0, layers).Select(i => c.IsGpt2
            ? (DecoderBlock)new Gpt2Block(SideConfig, i, sideExtensions, f32, device)
            : new LlamaDecoderLayer(SideConfig, i, sideExtensions, f32, device)).ToList();
        register_module(c.IsGpt2 ? "h" : "layers", nn.ModuleList(blocks.ToArray()));
        finalNorm = c.IsGpt2 ? new LayerNorm(side, c.LayerNormEpsilon, f32, device) : new RmsNorm(side, c.RmsNormEps, f32, device);
        register_module(c.IsGpt2 ? "ln_f" : "norm", finalNorm);
        Upsample = new Linear(side, c.Hidden, hasBias: false, fanInFanOut: false, f32, device);
        register_module("upsample", Upsample);
        if (ladder)
        {
            var lst = (LstConfig)config;
            Temperature = lst.GateTemperature;
            Gates = new Parameter(full([layers], lst.GateAlpha, f32, device));
            register_parameter("gates", Gates);
        }
        else
        {
            double a = ((SideTuningConfig)config).BlendInit;
            Blend = new Parameter(full([1], Math.Log(a / (1 - a)), f32, device));
            register_parameter("blend", Blend);
        }
        if (!c.IsGpt2) rope = new RotaryEmbedding(SideConfig.HeadDim, c.RopeTheta, c.RopeScaling);
        if (inference || device.type == DeviceType.META) ZeroAll();
        else Initialise(model, config, gen);
    }

    /// <summary>The backbone's config with hidden size, head size and MLP size divided by <paramref name="r"/> (same heads and layers).</summary>
    internal static ModelConfig Reduced(ModelConfig c, int r) => new()
    {
        ModelType = c.ModelType, VocabSize = c.VocabSize, TieWordEmbeddingsRaw = c.TieWordEmbeddingsRaw,
        NEmbd = c.NEmbd / r, NLayer = c.NLayer, NHead = c.NHead, NPositions = c.NPositions, NInner = c.IsGpt2 ? c.Inner / r : null,
        LayerNormEpsilon = c.LayerNormEpsilon, ActivationFunction = c.ActivationFunction,
        HiddenSize = c.HiddenSize / r, IntermediateSize = c.IntermediateSize / r, NumHiddenLayers = c.NumHiddenLayers,
        NumAttentionHeads = c.NumAttentionHeads, NumKeyValueHeads = c.NumKeyValueHeads, HeadDimRaw = c.IsGpt2 ? null : c.HeadDim / r,
        MaxPositionEmbeddings = c.MaxPositionEmbeddings, RmsNormEps = c.RmsNormEps, RopeTheta = c.RopeTheta, RopeScaling = c.RopeScaling,
        AttentionBias = c.AttentionBias, MlpBias = c.MlpBias, HiddenAct = c.HiddenAct,
    };

    void ZeroAll()
    {
        using var _ = no_grad();
        foreach (var p in parameters()) p.zero_();
    }

    void Initialise(CausalLM model, SideNetworkConfig config, Generator gen)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var c = model.Config;
        int r = config.ReductionFactor, side = c.Hidden / r;
        bool l2 = config.PruningNorm == "l2";
        // Random init first (everything), then the pruned copy overwrites blocks, norm and projections.
        foreach (var (name, p) in named_parameters())
        {
            if (name == "gates" || name == "blend") continue;
            bool vector = p.dim() == 1;
            bool norm = name.Contains("ln_") || name.Contains("norm");
            if (vector) p.fill_(norm && name.EndsWith("weight") ? 1.0 : 0.0);
            else p.copy_(randn(p.shape, ScalarType.Float32, generator: gen).mul(0.02).to(p.device));
        }
        // LST starts at the base model: the side network adds up(side) = 0 until the up-projection learns.
        if (Ladder) Upsample.weight.zero_();
        if (config.SideInitMode != SideInit.Pruned) return;
        var embedding = model.named_parameters().First(p => p.name is "transformer.wte.weight" or "model.embed_tokens.weight").parameter;
        var residual = StructuredPruning.ResidualDims(embedding, side, l2);
        for (int i = 0; i < blocks.Count; i++)
        {
            if (c.IsGpt2) StructuredPruning.Prune((Gpt2Block)model.Blocks[i], (Gpt2Block)blocks[i], residual, c, r, l2);
            else StructuredPruning.Prune((LlamaDecoderLayer)model.Blocks[i], (LlamaDecoderLayer)blocks[i], residual, c, r, l2);
        }
        var backboneNorm = model.named_parameters().Where(p => p.name is "transformer.ln_f.weight" or "transformer.ln_f.bias" or "model.norm.weight")
            .ToDictionary(p => p.name.EndsWith("bias") ? "bias" : "weight", p => p.parameter);
        foreach (var (name, p) in finalNorm.named_parameters()) StructuredPruning.CopyVector(backboneNorm[name], p, residual);
        // Down-projections select the kept residual dimensions: the pruned blocks read the coordinates they were cut to.
        var select = zeros([side, c.Hidden], ScalarType.Float32, Upsample.weight.device);
        for (int j = 0; j < side; j++) select[j, residual[j]] = tensor(1.0f);
        foreach (var d in downsamples)
        {
            d.weight.copy_(select);
            d.bias!.zero_();
        }
        // Side tuning's output enters the blend directly: scatter the kept dimensions back (LST keeps its zero up-projection).
        if (!Ladder) Upsample.weight.copy_(select.t());
    }

    /// <summary>The side stream after the first tap: down_0(embeddings).</summary>
    internal Tensor Start(Tensor embeddings) => downsamples[0].forward(embeddings.to_type(ScalarType.Float32));

    /// <summary>Side block <paramref name="i"/> over <paramref name="x"/> [B, T, hidden/r].</summary>
    internal Tensor Block(int i, Tensor x, SideForward f) => blocks[i] switch
    {
        Gpt2Block g => g.Forward(x, f.Cache, f.Mask),
        LlamaDecoderLayer l => l.Forward(x, f.Cos!, f.Sin!, f.Cache, f.Mask),
        _ => throw new InvalidOperationException(),
    };

    /// <summary>LST's gate μ_i = sigmoid(α_i / T) as a 0-d tensor.</summary>
    internal Tensor Gate(int i) => Gates![i].div(Temperature).sigmoid();

    /// <summary>The ladder merge after block i: μ_i·down_{i+1}(h) + (1 − μ_i)·side.</summary>
    internal Tensor Merge(int i, Tensor side, Tensor backboneHidden)
    {
        var mu = Gate(i);
        var down = downsamples[i + 1].forward(backboneHidden.to_type(ScalarType.Float32));
        return down.mul(mu).add(side.mul(mu.neg().add(1)));
    }

    /// <summary>The final side contribution: up(norm(side)), float32 [B, T, hidden].</summary>
    internal Tensor Output(Tensor side) => Upsample.forward(finalNorm.forward(side));

    /// <summary>Rotary tables for the side heads (Llama family; null for GPT-2).</summary>
    internal (Tensor? Cos, Tensor? Sin) Rotary(Tensor? rowPositions, long offset, long length, Device device)
    {
        if (rope is null) return (null, null);
        var (cos, sin) = rowPositions is not null ? rope.Tables(rowPositions, ScalarType.Float32) : rope.Tables(offset, length, ScalarType.Float32, device);
        return (cos, sin);
    }
}

/// <summary>What the side blocks need for one forward: their cache, the caller's padding mask, the rotary tables.</summary>
internal sealed record SideForward(KvCache? Cache, Tensor? Mask, Tensor? Cos, Tensor? Sin);
