using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Mixtures.MoV;

/// <summary>
/// MoV on one linear layer: per token the merged vector <c>l(x) = Σ_e w_e(x)·l_e</c> (one [.., E]×[E, d] matmul,
/// <c>w = softmax(router·x)</c>), then one elementwise scale: <c>y = base(x)·l</c>, or <c>y = base(x·l)</c> for a
/// feed-forward target — the merged computation of Zadouri et al., never E scaled copies. Parameters under the host:
/// <c>{path}.mov_{adapter}.router.weight</c> and <c>….ia3_l</c> [E, d].
/// </summary>
public sealed class MoVLinear : nn.Module, ILayerTuner, IMixtureComponent
{
#pragma warning disable IDE1006 // module names
    /// <summary>The router [E, in].</summary>
    public readonly ExpertRouter router;
    /// <summary>The experts' vectors [E, d], d = out (or in for a feed-forward target).</summary>
    public readonly Parameter ia3_l;
#pragma warning restore IDE1006

    readonly string moduleName;
    readonly RoutingLog log;

    /// <summary>Attaches adapter <paramref name="adapter"/>'s vectors to <paramref name="host"/> (module path <paramref name="path"/>).</summary>
    public MoVLinear(Linear host, string path, string adapter, MoVConfig config, bool feedforward, RoutingLog log, Generator? generator) : base(nameof(MoVLinear))
    {
        hostRef = new HostRef(host);
        Path = path;
        Adapter = adapter;
        IsFeedforward = feedforward;
        this.log = log;
        moduleName = $"mov_{adapter}";
        var device = host.weight.device;
        router = new ExpertRouter(config.NumExperts, host.InFeatures, config.RouterInitRange, device, generator);
        long d = feedforward ? host.InFeatures : host.OutFeatures;
        var init = config.InitIa3Weights ? ones([config.NumExperts, d], ScalarType.Float32)
            : rand([config.NumExperts, d], ScalarType.Float32, generator: generator).add_(0.5);
        ia3_l = new Parameter(init.to(device));
        register_module("router", router); // by hand: RegisterComponents would adopt the host too
        register_parameter("ia3_l", ia3_l);
        host.register_module(moduleName, this);
        host.AddTuner(this);
    }

    // The host sits in a plain holder: a Module-typed field would be adopted as a submodule (a cycle).
    sealed record HostRef(Linear Layer);
    readonly HostRef hostRef;

    /// <summary>The adapted layer.</summary>
    public Linear Host => hostRef.Layer;
    /// <summary>Its module path.</summary>
    public string Path { get; }
    /// <summary>True when the merged vector scales the input.</summary>
    public bool IsFeedforward { get; }
    /// <inheritdoc/>
    public string Adapter { get; }
    /// <inheritdoc/>
    public bool Active { get; set; }
    /// <inheritdoc/>
    public bool Disabled { get; set; }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input)
    {
        if (!Active || Disabled) return Host.BaseForward(input);
        using var scope = NewDisposeScope();
        var weights = SoftRouting.Weights(router.Logits(input));
        log.Statistics?.Add(Path, weights, null);
        var l = weights.matmul(ia3_l); // [.., d]: the merged vector per token
        var y = IsFeedforward
            ? Host.BaseForward(input.mul(l.to_type(input.dtype)))
            : Host.BaseForward(input).mul(l.to_type(input.dtype));
        return y.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public IEnumerable<(string Name, Parameter Param)> NamedParameters()
    {
        yield return ($"{Path}.{moduleName}.router.weight", router.weight);
        yield return ($"{Path}.{moduleName}.ia3_l", ia3_l);
    }

    /// <inheritdoc/>
    public void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule(moduleName);
        Dispose();
    }
}
