using PeftSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;
using TorchLinear = TorchSharp.Modules.Linear;

namespace PeftSharp.Tuners.UniPelt;

/// <summary>
/// UniPELT's bottleneck adapter on the MLP's output projection (extension point 1, as LLM-Adapters' AdapterP output
/// adapter): <c>z = base(x); y = z + g(z) · up(act(down(z)))</c> with the gate <c>g(z) = σ(w·z + b)</c> from the
/// adapter's own input row (the feed-forward output h_F, as in the paper). Parameters on the layer:
/// <c>unipelt_adapter_down.weight</c> [d, out] (kaiming-uniform), <c>unipelt_adapter_up.weight</c> [out, d] (zero),
/// <c>unipelt_adapter_gate.weight</c> [1, out] and <c>.bias</c> [1].
/// </summary>
internal sealed class GatedAdapter : ILayerTuner
{
    public const string DownName = "unipelt_adapter_down", UpName = "unipelt_adapter_up", GateName = "unipelt_adapter_gate";

    public GatedAdapter(Linear host, int bottleneck, string nonLinearity, Generator? gen)
    {
        Host = host;
        NonLinearity = nonLinearity;
        var device = host.weight.device;
        Down = Gate.Projection(host.OutFeatures, bottleneck, zero: false, gen, device);
        Up = Gate.Projection(bottleneck, host.OutFeatures, zero: true, gen, device);
        GateLayer = Gate.Create(host.OutFeatures, gen, device);
        host.register_module(DownName, Down);
        host.register_module(UpName, Up);
        host.register_module(GateName, GateLayer);
        host.AddTuner(this);
    }

    public Linear Host { get; }
    public string NonLinearity { get; }
    public TorchLinear Down { get; }
    public TorchLinear Up { get; }
    public TorchLinear GateLayer { get; }
    public bool Enabled { get; set; } = true;
    public GateMeter? Meter { get; set; }

    /// <summary>The parameters with their names relative to the host layer.</summary>
    public IEnumerable<(string Name, TorchSharp.Modules.Parameter Param)> Parameters()
    {
        yield return ($"{DownName}.weight", Down.weight!);
        yield return ($"{UpName}.weight", Up.weight!);
        yield return ($"{GateName}.weight", GateLayer.weight!);
        yield return ($"{GateName}.bias", GateLayer.bias!);
    }

    public Tensor Forward(Tensor x)
    {
        var z = Host.BaseForward(x);
        if (!Enabled) return z;
        using var scope = NewDisposeScope();
        var f = z.dtype == ScalarType.Float32 ? z : z.to_type(ScalarType.Float32);
        var hidden = Down.forward(f);
        hidden = NonLinearity == "relu" ? nn.functional.relu(hidden) : hidden.tanh();
        var g = Gate.Apply(GateLayer, f);
        Meter?.Add(g);
        var delta = Up.forward(hidden).mul(g);
        return z.add(delta.to_type(z.dtype)).MoveToOuterDisposeScope();
    }

    public void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule(DownName);
        Host.RemoveSubmodule(UpName);
        Host.RemoveSubmodule(GateName);
        Down.Dispose();
        Up.Dispose();
        GateLayer.Dispose();
    }
}
