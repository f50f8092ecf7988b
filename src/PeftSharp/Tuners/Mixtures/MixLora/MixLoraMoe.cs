using PeftSharp.Models;
using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Mixtures.MixLora;

/// <summary>
/// MixLoRA's sparse mixture on the feed-forward network of one block (the reference code's <c>MixLoraSparseMoe</c>):
/// a top-k router (<c>moe_gate</c>) picks k of E experts per token; expert e is the block's own frozen FFN with its own
/// LoRA on each targeted projection; the token's output is the routing-weighted sum of its experts' outputs.
/// </summary>
/// <remarks>
/// <para>Attached as a <see cref="HookPlacement.Serial"/> hook on the block's MLP (extension point 2), it recomputes the
/// MLP from the sub-layer input and replaces its output. So that the block's own MLP pass (whose output is replaced) costs
/// nothing, a pass-through tuner on each FFN projection (extension point 1, <see cref="BlockMlpBypass"/>) returns zeros
/// instead of multiplying while the mixture is active and not computing itself: the block then spends only elementwise
/// work on a result it throws away.</para>
/// <para>Efficient dispatch: the (token, choice) pairs are sorted by expert (one stable sort, one bincount moved to the CPU);
/// the first projection(s) run once on all tokens (the frozen weights are shared) and are gathered per pair; the second
/// projection runs once on all N·k pairs; only the experts' LoRA terms run per expert, as one matmul over that expert's
/// contiguous rows; the weighted rows go back to their tokens with one index_add.</para>
/// </remarks>
public sealed class MixLoraMoe : nn.Module, ISubLayerHook, IMixtureComponent
{
#pragma warning disable IDE1006 // the reference code's names
    /// <summary>The router, [num_experts, hidden] (reference key <c>mlp.moe_gate.weight</c>).</summary>
    public readonly ExpertRouter moe_gate;
    /// <summary>The experts' LoRAs by projection name (c_fc, c_proj; gate_proj, up_proj, down_proj).</summary>
    public readonly AdapterContainer<LoraExperts> experts = new("experts");
#pragma warning restore IDE1006

    // The block and its projections sit in a plain holder: a Module-typed field would be adopted as a submodule
    // (a cycle through the block).
    sealed class Refs
    {
        public required DecoderBlock Block;
        public required Linear[] First;   // c_fc; or gate_proj, up_proj
        public required Linear Second;    // c_proj; or down_proj
    }

    readonly Refs refs;
    readonly string blockPath;
    readonly string moduleName;
    readonly RoutingLog log;
    readonly string[] firstNames;
    readonly string secondName;
    readonly string activation;
    readonly bool gated;
    readonly IDisposable hookHandle;
    readonly List<BlockMlpBypass> bypasses = [];
    bool computing;

    /// <summary>Builds the mixture of adapter <paramref name="adapter"/> on block <paramref name="block"/> (path <paramref name="blockPath"/>) and hooks it in.</summary>
    public MixLoraMoe(CausalLM model, DecoderBlock block, string blockPath, string adapter, MixLoraConfig config, ISet<string> targets, RoutingLog log, Generator? generator)
        : base(nameof(MixLoraMoe))
    {
        this.blockPath = blockPath;
        this.log = log;
        Adapter = adapter;
        Config = config;
        moduleName = $"mixlora_{adapter}";
        switch (block)
        {
            case Gpt2Block g:
                refs = new Refs { Block = block, First = [g.mlp.c_fc], Second = g.mlp.c_proj };
                firstNames = ["c_fc"];
                secondName = "c_proj";
                activation = config.ActFn ?? model.Config.ActivationFunction;
                gated = false;
                break;
            case LlamaDecoderLayer l:
                refs = new Refs { Block = block, First = [l.mlp.gate_proj, l.mlp.up_proj], Second = l.mlp.down_proj };
                firstNames = ["gate_proj", "up_proj"];
                secondName = "down_proj";
                activation = config.ActFn ?? model.Config.HiddenAct;
                gated = true;
                break;
            default:
                throw new PeftSharpException($"MixLoRA: blocks of type {block.GetType().Name} are not supported");
        }
        var device = refs.Second.weight.device;
        moe_gate = new ExpertRouter(config.NumExperts, refs.First[0].InFeatures, config.RouterInitRange, device, generator);
        double scaling = config.ScalingFor(config.ExpertR, config.ExpertAlpha);
        foreach (var (name, proj) in firstNames.Zip(refs.First).Append((secondName, refs.Second)))
            if (targets.Contains(name))
                experts.Add(name, new LoraExperts(config.NumExperts, config.ExpertR, proj.InFeatures, proj.OutFeatures, scaling,
                    config.ExpertDropout, config.LoraInit == "gaussian", device, generator));
        // Registered by hand: RegisterComponents would also adopt the block and its projections held in fields.
        register_module("moe_gate", moe_gate);
        register_module("experts", experts);
        block.AddModule(moduleName, this);
        hookHandle = model.Extensions.AddSubLayerHook(block.Index, SubLayerKind.Mlp, this);
        foreach (var proj in refs.First.Append(refs.Second)) bypasses.Add(new BlockMlpBypass(proj, this));
    }

    /// <summary>Whether the block's own MLP pass can be skipped: its output is about to be replaced by this mixture.</summary>
    bool SkipsBlockMlp => Active && !Disabled && !computing;

    /// <summary>
    /// Outermost tuner on an FFN projection: while the mixture replaces the MLP output it answers the block's own MLP pass
    /// with zeros (an expanded scalar, no matmul); otherwise, and while the mixture itself computes, it passes through.
    /// </summary>
    sealed class BlockMlpBypass : ILayerTuner
    {
        readonly Linear host;
        readonly MixLoraMoe owner;

        public BlockMlpBypass(Linear host, MixLoraMoe owner)
        {
            this.host = host;
            this.owner = owner;
            host.AddTuner(this);
        }

        public Tensor Forward(Tensor input)
        {
            if (!owner.SkipsBlockMlp) return host.BaseForward(input);
            return zeros(1, input.dtype, input.device).expand([.. input.shape[..^1], host.OutFeatures]);
        }

        public void Detach() => host.RemoveTuner(this);
    }

    /// <summary>The adapter's config.</summary>
    public MixLoraConfig Config { get; }
    /// <summary>The block's index.</summary>
    public int Layer => refs.Block.Index;
    /// <summary>Projection names that have experts.</summary>
    public IEnumerable<string> ExpertProjections => experts.Names;
    /// <inheritdoc/>
    public string Adapter { get; }
    /// <inheritdoc/>
    public bool Active { get; set; }
    /// <inheritdoc/>
    public bool Disabled { get; set; }
    /// <inheritdoc/>
    public HookPlacement Placement => HookPlacement.Serial;

    /// <inheritdoc/>
    public Tensor Forward(SubLayerCall call)
    {
        if (!Active || Disabled) return call.Output;
        computing = true;
        try
        {
            return Mixture(call);
        }
        finally
        {
            computing = false;
        }
    }

    Tensor Mixture(SubLayerCall call)
    {
        using var scope = NewDisposeScope();
        // The block's mode, not this module's: modules added after model.eval() would still say "training".
        bool training = refs.Block.training;
        var input = call.Input;
        long hidden = input.shape[^1];
        var h = input.reshape(-1, hidden);
        if (training && Config.JitterNoise > 0)
            h = h.mul(empty_like(h).uniform_(1.0 - Config.JitterNoise, 1.0 + Config.JitterNoise));
        long n = h.shape[0];
        int k = Config.TopK;
        var decision = TopKRouting.Route(moe_gate.Logits(h), k);
        log.Record($"layer {Layer}", moe_gate, h, decision, k, training);

        // Sort the N·k (token, choice) pairs by expert; each expert's pairs become one contiguous run of rows.
        var pairExperts = decision.Experts.reshape(-1);
        var (_, order) = pairExperts.sort(0, descending: false, stable: true);
        var counts = bincount(pairExperts, minlength: Config.NumExperts).cpu().data<long>().ToArray();
        var tokens = order.div(k, rounding_mode: RoundingMode.floor);
        var weights = decision.Weights.reshape(-1).index_select(0, order);
        var rows = h.index_select(0, tokens);

        Tensor First(int i)
        {
            var common = refs.First[i].forward(h).index_select(0, tokens); // the frozen projection once per token
            return experts.Contains(firstNames[i])
                ? common.add(experts[firstNames[i]].GroupedDelta(rows, counts, training).to_type(common.dtype))
                : common;
        }
        var act = gated
            ? Activations.Apply(activation, First(0)).mul(First(1))
            : Activations.Apply(activation, First(0));
        var y = refs.Second.forward(act);
        if (experts.Contains(secondName))
            y = y.add(experts[secondName].GroupedDelta(act, counts, training).to_type(y.dtype));
        y = y.to_type(ScalarType.Float32).mul(weights.unsqueeze(1));
        var output = zeros([n, y.shape[1]], ScalarType.Float32, y.device).index_add(0, tokens, y, 1.0);
        return output.reshape(call.Output.shape).to_type(call.Output.dtype).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public IEnumerable<(string Name, Parameter Param)> NamedParameters()
    {
        string prefix = $"{blockPath}.{moduleName}";
        yield return ($"{prefix}.moe_gate.weight", moe_gate.weight);
        foreach (var name in experts.Names)
        {
            yield return ($"{prefix}.experts.{name}.lora_A", experts[name].lora_A);
            yield return ($"{prefix}.experts.{name}.lora_B", experts[name].lora_B);
        }
    }

    /// <inheritdoc/>
    public void Detach()
    {
        hookHandle.Dispose();
        foreach (var b in bypasses) b.Detach();
        refs.Block.RemoveModule(moduleName);
        Dispose();
    }
}
