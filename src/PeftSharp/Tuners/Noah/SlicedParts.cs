using PeftSharp.Models;
using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;
using TorchLinear = TorchSharp.Modules.Linear;

namespace PeftSharp.Tuners.Noah;

/// <summary>Weights of NOAH's parts: torch defaults (U(±1/√in)) or zero, bias-free, float32.</summary>
internal static class NoahInit
{
    public static TorchLinear Projection(long input, long output, bool zero, Generator? gen, Device device)
    {
        var l = nn.Linear(input, output, hasBias: false, dtype: ScalarType.Float32, device: device);
        using var _ = no_grad();
        if (zero) l.weight!.zero_();
        else
        {
            double bound = 1.0 / Math.Sqrt(input);
            l.weight!.uniform_(-bound, bound, gen);
        }
        return l;
    }
}

/// <summary>
/// NOAH's LoRA on one Linear layer at the active rank r of at most r_max: <c>y = base(x) + B[:, :r]·A[:r]·x · α/r</c>
/// (DyLoRA's truncation), which is exactly a PEFT LoRA of rank r with those rows and lora_alpha α. Parameters on the
/// layer: <c>noah_lora_A.weight</c> [r_max, in] (kaiming-uniform), <c>noah_lora_B.weight</c> [out, r_max] (zero).
/// </summary>
internal sealed class SlicedLora : ILayerTuner
{
    public const string AName = "noah_lora_A", BName = "noah_lora_B";

    public SlicedLora(Linear host, int rMax, double alpha, Generator? gen)
    {
        Host = host;
        Alpha = alpha;
        var device = host.weight.device;
        A = NoahInit.Projection(host.InFeatures, rMax, zero: false, gen, device);
        B = NoahInit.Projection(rMax, host.OutFeatures, zero: true, gen, device);
        host.register_module(AName, A);
        host.register_module(BName, B);
        host.AddTuner(this);
    }

    public Linear Host { get; }
    public double Alpha { get; }
    public TorchLinear A { get; }
    public TorchLinear B { get; }
    public int Rank { get; set; }
    public bool Enabled { get; set; } = true;

    public IEnumerable<(string Name, Parameter Param)> Parameters()
    {
        yield return ($"{AName}.weight", A.weight!);
        yield return ($"{BName}.weight", B.weight!);
    }

    public Tensor Forward(Tensor x)
    {
        var y = Host.BaseForward(x);
        if (!Enabled || Rank == 0) return y;
        using var scope = NewDisposeScope();
        var f = x.dtype == ScalarType.Float32 ? x : x.to_type(ScalarType.Float32);
        var a = A.weight!.narrow(0, 0, Rank);
        var b = B.weight!.narrow(1, 0, Rank);
        var delta = nn.functional.linear(nn.functional.linear(f, a), b).mul(Alpha / Rank);
        return y.add(delta.to_type(y.dtype)).MoveToOuterDisposeScope();
    }

    public void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule(AName);
        Host.RemoveSubmodule(BName);
        A.Dispose();
        B.Dispose();
    }
}

/// <summary>
/// NOAH's bottleneck adapter on the MLP's output projection at the active width d of at most d_max:
/// <c>z = base(x); y = z + up[:, :d]·tanh(down[:d]·z)</c> — exactly LLM-Adapters' AdapterP output adapter
/// (BOTTLENECK, scaling 1, tanh) of width d. Parameters: <c>noah_adapter_down.weight</c> [d_max, out],
/// <c>noah_adapter_up.weight</c> [out, d_max] (zero).
/// </summary>
internal sealed class SlicedAdapter : ILayerTuner
{
    public const string DownName = "noah_adapter_down", UpName = "noah_adapter_up";

    public SlicedAdapter(Linear host, int dMax, Generator? gen)
    {
        Host = host;
        var device = host.weight.device;
        Down = NoahInit.Projection(host.OutFeatures, dMax, zero: false, gen, device);
        Up = NoahInit.Projection(dMax, host.OutFeatures, zero: true, gen, device);
        host.register_module(DownName, Down);
        host.register_module(UpName, Up);
        host.AddTuner(this);
    }

    public Linear Host { get; }
    public TorchLinear Down { get; }
    public TorchLinear Up { get; }
    public int Dim { get; set; }
    public bool Enabled { get; set; } = true;

    public IEnumerable<(string Name, Parameter Param)> Parameters()
    {
        yield return ($"{DownName}.weight", Down.weight!);
        yield return ($"{UpName}.weight", Up.weight!);
    }

    public Tensor Forward(Tensor x)
    {
        var z = Host.BaseForward(x);
        if (!Enabled || Dim == 0) return z;
        using var scope = NewDisposeScope();
        var f = z.dtype == ScalarType.Float32 ? z : z.to_type(ScalarType.Float32);
        var hidden = nn.functional.linear(f, Down.weight!.narrow(0, 0, Dim)).tanh();
        var up = nn.functional.linear(hidden, Up.weight!.narrow(1, 0, Dim));
        return z.add(up.to_type(z.dtype)).MoveToOuterDisposeScope();
    }

    public void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule(DownName);
        Host.RemoveSubmodule(UpName);
        Down.Dispose();
        Up.Dispose();
    }
}

/// <summary>NOAH's prompt table: <c>weight</c> [p_max, num_layers·2·token_dim] in PEFT's prefix layout (N(0, 1) init, as PEFT's PrefixEncoder).</summary>
internal sealed class PromptTable : nn.Module
{
#pragma warning disable IDE1006 // torch parameter name
    public readonly Parameter weight;
#pragma warning restore IDE1006

    public PromptTable(long rows, long width, Generator? gen, Device device) : base(nameof(PromptTable))
    {
        weight = new Parameter(empty([Math.Max(rows, 0), width], ScalarType.Float32, device));
        using (no_grad()) weight.normal_(0, 1, gen);
        RegisterComponents();
    }
}

/// <summary>
/// NOAH's deep prompt at the active length p: the first p rows of the table read as PEFT's prefix tuning reads
/// <c>prompt_embeddings</c> (layer l's keys at 2l, values at 2l + 1) — exactly a PREFIX_TUNING adapter of p virtual tokens.
/// </summary>
internal sealed class SlicedPrompt(PromptTable table, int layers, int heads, int tokenDim, int length) : IKvPrefix
{
    public int Length => length;

    public (Tensor Keys, Tensor Values) For(int layer, long batch, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var view = table.weight.narrow(0, 0, length).view(length, layers * 2, heads, tokenDim / heads);
        var keys = view.select(1, 2 * layer).permute(1, 0, 2).unsqueeze(0).to(dtype, device);
        var values = view.select(1, 2 * layer + 1).permute(1, 0, 2).unsqueeze(0).to(dtype, device);
        return (keys.MoveToOuterDisposeScope(), values.MoveToOuterDisposeScope());
    }
}
