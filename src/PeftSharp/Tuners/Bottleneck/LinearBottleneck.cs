using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// LLM-Adapters' bottleneck adapter on one Linear layer (its fork's <c>bottleneck.Linear</c>), attached through the
/// layer's tuner slot. With <c>f(x) = adapter_up(act(adapter_down(dropout(x))))</c>, computed in float32 and cast back
/// to the layer's dtype before the scaling s:
/// <list type="bullet">
/// <item>input (<c>mh_adapter</c>): <c>y = base(x + s·f(x))</c>, f: in → in;</item>
/// <item>output (<c>output_adapter</c>): <c>z = base(x); y = z + s·f(z)</c>, f: out → out;</item>
/// <item>parallel (<c>parallel_adapter</c>): <c>y = base(x) + s·f(x)</c>, f: in → out.</item>
/// </list>
/// The projections have no bias. Parameters hang off the host layer under the fork's names: <c>adapter_down.weight</c>
/// [bottleneck, in], <c>adapter_up.weight</c> [out, bottleneck] and, with <c>scaling: "learned"</c>,
/// <c>adapter_scaling</c> [1]. The fork holds one adapter per layer, so there is no adapter name in the keys.
/// </summary>
public sealed class LinearBottleneck : ILayerTuner
{
    /// <summary>
    /// A bottleneck around <paramref name="host"/> at <paramref name="placement"/>, sized and initialised from <paramref name="config"/>, drawing from <paramref name="generator"/>.
    /// </summary>
    public LinearBottleneck(Linear host, LinearAdapterPlacement placement, BottleneckConfig config, Generator? generator)
    {
        Host = host;
        Placement = placement;
        NonLinearity = config.NonLinearity;
        Dropout = config.AdapterDropout;
        ConstantScaling = config.ScalingValue;
        long inSize = placement == LinearAdapterPlacement.Output ? host.OutFeatures : host.InFeatures;
        long outSize = placement == LinearAdapterPlacement.Input ? host.InFeatures : host.OutFeatures;
        var device = host.weight.device;
        adapter_down = new Linear(inSize, config.BottleneckSize, hasBias: false, dtype: ScalarType.Float32, device: device);
        adapter_up = new Linear(config.BottleneckSize, outSize, hasBias: false, dtype: ScalarType.Float32, device: device);
        Initialize(config.InitWeights, generator);
        host.register_module("adapter_down", adapter_down);
        host.register_module("adapter_up", adapter_up);
        if (config.LearnedScaling)
        {
            adapter_scaling = new Parameter(ones(1, ScalarType.Float32, device));
            host.register_parameter("adapter_scaling", adapter_scaling);
        }
        host.AddTuner(this);
    }

    /// <summary>Takes the adapter off its layer (its modules and parameters leave the host).</summary>
    public void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule("adapter_down");
        Host.RemoveSubmodule("adapter_up");
        if (adapter_scaling is not null) Host.RemoveParameter("adapter_scaling");
        adapter_down.Dispose();
        adapter_up.Dispose();
    }

    /// <summary>The adapted linear layer.</summary>
    public Linear Host { get; }
    /// <summary>Where the adapter sits relative to the host layer.</summary>
    public LinearAdapterPlacement Placement { get; }
    /// <summary>The non-linearity between the projections.</summary>
    public string NonLinearity { get; }
    /// <summary>Dropout probability on the adapter's input.</summary>
    public double Dropout { get; }
    /// <summary>The constant scaling of the adapter's output (used when scaling is not learned).</summary>
    public double ConstantScaling { get; }
    /// <summary>When false the layer runs its base computation only (the fork's <c>disable_adapters</c>).</summary>
    public bool Enabled { get; set; } = true;

#pragma warning disable IDE1006 // the fork's parameter names
    /// <summary>Down-projection to the bottleneck width.</summary>
    public readonly Linear adapter_down;
    /// <summary>Up-projection back to the host's size.</summary>
    public readonly Linear adapter_up;
    /// <summary>The learned scaling, or null when it is constant.</summary>
    public readonly Parameter? adapter_scaling;
#pragma warning restore IDE1006

    /// <summary>The adapter's own parameters with their names relative to the host layer.</summary>
    public IEnumerable<(string Name, Parameter Param)> Parameters()
    {
        yield return ("adapter_down.weight", adapter_down.weight);
        yield return ("adapter_up.weight", adapter_up.weight);
        if (adapter_scaling is not null) yield return ("adapter_scaling", adapter_scaling);
    }

    void Initialize(string method, Generator? generator)
    {
        if (adapter_down.weight.device_type == DeviceType.META) return; // sizes only (inspect)
        using var _ = no_grad();
        if (method == "bert")
        {
            // The fork applies BERT's init to both projections: normal(0, 0.02); the up-projection is not zero.
            adapter_down.weight.normal_(0, 0.02, generator);
            adapter_up.weight.normal_(0, 0.02, generator);
        }
        else
        {
            // mam_adapter: kaiming_uniform_(a=√5) on the down-projection, i.e. U(-1/√fan_in, 1/√fan_in); up-projection zero.
            double bound = 1.0 / Math.Sqrt(adapter_down.InFeatures);
            adapter_down.weight.uniform_(-bound, bound, generator);
            adapter_up.weight.zero_();
        }
    }

    /// <inheritdoc/>
    public Tensor Forward(Tensor x)
    {
        if (!Enabled) return Host.BaseForward(x);
        using var scope = NewDisposeScope();
        Tensor result;
        switch (Placement)
        {
            case LinearAdapterPlacement.Input:
                result = Host.BaseForward(Branch(x, x.dtype).add_(x));
                break;
            case LinearAdapterPlacement.Output:
                var z = Host.BaseForward(x);
                result = Branch(z, z.dtype).add_(z);
                break;
            default:
                var y = Host.BaseForward(x);
                result = y.add(Branch(x, y.dtype));
                break;
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>s · f(x), computed in float32 and cast to <paramref name="dtype"/> before the scaling, as the fork does.</summary>
    Tensor Branch(Tensor x, ScalarType dtype)
    {
        var h = x.dtype == ScalarType.Float32 ? x : x.to_type(ScalarType.Float32);
        if (Dropout > 0 && Host.training) h = nn.functional.dropout(h, Dropout, training: true);
        var up = adapter_up.forward(BottleneckActivation.Apply(NonLinearity, adapter_down.forward(h))).to_type(dtype);
        return adapter_scaling is null ? up.mul(ConstantScaling) : up.mul(adapter_scaling).to_type(dtype);
    }
}
