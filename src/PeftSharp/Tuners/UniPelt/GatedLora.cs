using PeftSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;
using TorchLinear = TorchSharp.Modules.Linear;

namespace PeftSharp.Tuners.UniPelt;

/// <summary>
/// UniPELT's LoRA on one Linear layer (extension point 1): <c>y = base(x) + g(x) · B·A·x · lora_alpha/r</c> with the
/// gate <c>g(x) = σ(w·x + b)</c> computed from the same input row x (the attention's input for q/v or GPT-2's c_attn).
/// Parameters hang off the layer as <c>unipelt_lora_A.weight</c> [r, in] (kaiming-uniform), <c>unipelt_lora_B.weight</c>
/// [out, r] (zero: a new adapter leaves the model unchanged), <c>unipelt_lora_gate.weight</c> [1, in] and <c>.bias</c> [1].
/// </summary>
internal sealed class GatedLora : ILayerTuner
{
    public const string AName = "unipelt_lora_A", BName = "unipelt_lora_B", GateName = "unipelt_lora_gate";

    public GatedLora(Linear host, int r, double scaling, Generator? gen)
    {
        Host = host;
        Scaling = scaling;
        var device = host.weight.device;
        A = Gate.Projection(host.InFeatures, r, zero: false, gen, device);
        B = Gate.Projection(r, host.OutFeatures, zero: true, gen, device);
        GateLayer = Gate.Create(host.InFeatures, gen, device);
        host.register_module(AName, A);
        host.register_module(BName, B);
        host.register_module(GateName, GateLayer);
        host.AddTuner(this);
    }

    public Linear Host { get; }
    public double Scaling { get; }
    public TorchLinear A { get; }
    public TorchLinear B { get; }
    public TorchLinear GateLayer { get; }
    public bool Enabled { get; set; } = true;
    public GateMeter? Meter { get; set; }

    /// <summary>The parameters with their names relative to the host layer.</summary>
    public IEnumerable<(string Name, TorchSharp.Modules.Parameter Param)> Parameters()
    {
        yield return ($"{AName}.weight", A.weight!);
        yield return ($"{BName}.weight", B.weight!);
        yield return ($"{GateName}.weight", GateLayer.weight!);
        yield return ($"{GateName}.bias", GateLayer.bias!);
    }

    public Tensor Forward(Tensor x)
    {
        var y = Host.BaseForward(x);
        if (!Enabled) return y;
        using var scope = NewDisposeScope();
        var f = x.dtype == ScalarType.Float32 ? x : x.to_type(ScalarType.Float32);
        var g = Gate.Apply(GateLayer, f);
        Meter?.Add(g);
        var delta = B.forward(A.forward(f)).mul(g).mul(Scaling);
        return y.add(delta.to_type(y.dtype)).MoveToOuterDisposeScope();
    }

    public void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule(AName);
        Host.RemoveSubmodule(BName);
        Host.RemoveSubmodule(GateName);
        A.Dispose();
        B.Dispose();
        GateLayer.Dispose();
    }
}
