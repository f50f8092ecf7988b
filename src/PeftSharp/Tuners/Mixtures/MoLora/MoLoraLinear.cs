using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Mixtures.MoLora;

/// <summary>
/// MoLoRA on one linear layer: <c>y = base(x) + Σ_e w_e(x)·B_e·A_e·x·scaling</c> with <c>w(x) = softmax(router·x)</c>
/// over all experts (dense, no token dropped), computed as two matmuls (<see cref="LoraExperts.MixedDelta"/>).
/// Parameters under the host: <c>{path}.molora_{adapter}.router.weight</c>, <c>….experts.lora_A</c> [E, r, in],
/// <c>….experts.lora_B</c> [E, out, r].
/// </summary>
public sealed class MoLoraLinear : nn.Module, ILayerTuner, IMixtureComponent
{
#pragma warning disable IDE1006 // module names
    /// <summary>The router [E, in].</summary>
    public readonly ExpertRouter router;
    /// <summary>The LoRA experts.</summary>
    public readonly LoraExperts experts;
#pragma warning restore IDE1006

    readonly string moduleName;
    readonly RoutingLog log;

    /// <summary>Attaches adapter <paramref name="adapter"/>'s experts to <paramref name="host"/> (module path <paramref name="path"/>).</summary>
    public MoLoraLinear(Linear host, string path, string adapter, MoLoraConfig config, RoutingLog log, Generator? generator) : base(nameof(MoLoraLinear))
    {
        hostRef = new HostRef(host);
        Path = path;
        Adapter = adapter;
        this.log = log;
        moduleName = $"molora_{adapter}";
        var device = host.weight.device;
        router = new ExpertRouter(config.NumExperts, host.InFeatures, config.RouterInitRange, device, generator);
        experts = new LoraExperts(config.NumExperts, config.R, host.InFeatures, host.OutFeatures, config.Scaling, config.LoraDropout, false, device, generator);
        register_module("router", router); // by hand: RegisterComponents would adopt the host too
        register_module("experts", experts);
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
        var y = Host.BaseForward(input);
        var weights = SoftRouting.Weights(router.Logits(input));
        log.Statistics?.Add(Path, weights, null);
        return y.add(experts.MixedDelta(input, weights, Host.training).to_type(y.dtype)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public IEnumerable<(string Name, Parameter Param)> NamedParameters()
    {
        yield return ($"{Path}.{moduleName}.router.weight", router.weight);
        yield return ($"{Path}.{moduleName}.experts.lora_A", experts.lora_A);
        yield return ($"{Path}.{moduleName}.experts.lora_B", experts.lora_B);
    }

    /// <inheritdoc/>
    public void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule(moduleName);
        Dispose();
    }
}
