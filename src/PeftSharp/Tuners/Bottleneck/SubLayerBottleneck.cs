using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using LayerNorm = PeftSharp.Models.Layers.LayerNorm;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>Modules registered under the names "0", "1", ... (the parameter-holding entries of a torch nn.Sequential).</summary>
public sealed class IndexedModules : nn.Module
{
    /// <summary>Registers <paramref name="modules"/> under their indices (as PyTorch's nn.Sequential names them).</summary>
    public IndexedModules(IReadOnlyList<(int Index, nn.Module Module)> modules) : base("Sequential")
    {
        foreach (var (i, m) in modules) register_module(i.ToString(System.Globalization.CultureInfo.InvariantCulture), m);
    }
}

/// <summary>
/// AdapterHub's bottleneck adapter at one sub-layer of one decoder block (its <c>Adapter</c> / <c>ParallelAdapter</c>),
/// with the parameter names AdapterHub saves: <c>adapter_down.0</c> (Linear hidden → d, with bias; with
/// <c>ln_before</c> the LayerNorm is <c>adapter_down.0</c> and the Linear <c>adapter_down.1</c>), <c>adapter_up</c>
/// (Linear d → hidden, with bias), <c>adapter_norm_after</c>, and <c>scaling</c> when learned ([1]) or per channel
/// ([hidden]). The bottleneck is <c>f(x) = dropout(adapter_up(act(adapter_down(LN?(x)))) · s)</c>.
/// </summary>
/// <remarks>
/// <para>How the block's residual stream changes, for sub-layer input h (the block's residual stream before the
/// sub-layer's own norm) and sub-layer output o, as AdapterHub computes it for pre-norm models (GPT-2, Llama), where
/// no layer norm is passed to the adapter:</para>
/// <list type="bullet">
/// <item>serial: x = o, or o + h with <c>original_ln_before</c>; residual r = o (<c>residual_before_ln</c> true)
/// or x (false); a = f(x); with <c>ln_after</c>: a = LN(a + r) or LN(a) + r
/// (<c>adapter_residual_before_ln</c>), else a + r; then + h with <c>original_ln_after</c>.</item>
/// <item>parallel: a = f(h) (LN(a) with <c>ln_after</c>), then a + o, then + h with <c>original_ln_after</c>.</item>
/// </list>
/// Houlsby: h + o + s·f(o). Pfeiffer: h + o + s·f(o + h). Parallel: h + o + s·f(h).
/// Adapter weights are float32; the adapter computes in float32 and its result is cast to the stream's dtype.
/// </remarks>
public sealed class SubLayerBottleneck : nn.Module
{
#pragma warning disable IDE1006 // AdapterHub's parameter names
    /// <summary>AdapterHub's <c>adapter_down</c> Sequential: the down-projection, after the adapter's own LayerNorm (index 0) when <c>ln_before</c>.</summary>
    public IndexedModules adapter_down;
    /// <summary>Up-projection back to the hidden size.</summary>
    public Linear adapter_up;
    /// <summary>The adapter's own LayerNorm after the up-projection, when <c>ln_after</c>.</summary>
    public LayerNorm? adapter_norm_after;
    /// <summary>The learned scaling, or null when it is constant.</summary>
    public Parameter? scaling;
#pragma warning restore IDE1006
    readonly LayerNorm? normBefore;
    readonly Linear down;
    readonly AdapterHubConfig config;
    readonly double constantScaling;

    /// <summary>
    /// An adapter for hidden size <paramref name="hiddenSize"/> with width <paramref name="bottleneckSize"/>, initialised as <paramref name="config"/>'s init_weights says.
    /// </summary>
    public SubLayerBottleneck(AdapterHubConfig config, int hiddenSize, int bottleneckSize, Device device, Generator? generator)
        : base("Adapter")
    {
        this.config = config;
        HiddenSize = hiddenSize;
        BottleneckSize = bottleneckSize;
        var f32 = ScalarType.Float32;
        down = new Linear(hiddenSize, bottleneckSize, hasBias: true, dtype: f32, device: device);
        if (config.LnBefore)
        {
            normBefore = new LayerNorm(hiddenSize, 1e-5, f32, device);
            adapter_down = new IndexedModules([(0, normBefore), (1, down)]);
        }
        else adapter_down = new IndexedModules([(0, down)]);
        adapter_up = new Linear(bottleneckSize, hiddenSize, hasBias: true, dtype: f32, device: device);
        if (config.LnAfter) adapter_norm_after = new LayerNorm(hiddenSize, 1e-5, f32, device);
        constantScaling = config.ScalingValue;
        if (config.ScalingKind == "learned") scaling = new Parameter(ones(1, f32, device));
        else if (config.ScalingKind == "channel") scaling = new Parameter(ones(hiddenSize, f32, device));
        Initialize(generator);
        RegisterComponents();
    }

    /// <summary>The block's hidden size.</summary>
    public int HiddenSize { get; }
    /// <summary>The bottleneck width.</summary>
    public int BottleneckSize { get; }
    /// <summary>Whether the adapter runs beside the sub-layer.</summary>
    public bool IsParallel => config.IsParallel;
    /// <summary>The adapter's AdapterHub config.</summary>
    public AdapterHubConfig Config => config;
    /// <summary>The LayerNorm before the down-projection (also saved as <c>adapter_norm_before</c>), when <c>ln_before</c>.</summary>
    public LayerNorm? NormBefore => normBefore;

    void Initialize(Generator? gen)
    {
        if (down.weight.device_type == DeviceType.META) return; // sizes only (inspect)
        using var _ = no_grad();
        if (normBefore is not null) { normBefore.weight.fill_(1); normBefore.bias.zero_(); }
        if (adapter_norm_after is not null) { adapter_norm_after.weight.fill_(1); adapter_norm_after.bias.zero_(); }
        switch (config.InitWeights)
        {
            case "bert": // BERT's init: normal(0, 0.02), zero biases (the up-projection is not zero)
                down.weight.normal_(0, 0.02, gen);
                adapter_up.weight.normal_(0, 0.02, gen);
                break;
            case "mam_adapter": // kaiming_uniform_(a=√5) down, zero up: a new adapter leaves the model unchanged
                double bound = 1.0 / Math.Sqrt(HiddenSize);
                down.weight.uniform_(-bound, bound, gen);
                adapter_up.weight.zero_();
                break;
            default: // "houlsby": truncated normal(0, 0.01) in [-0.02, 0.02] on both
                TruncatedNormal(down.weight, gen);
                TruncatedNormal(adapter_up.weight, gen);
                break;
        }
        down.bias!.zero_();
        adapter_up.bias!.zero_();
    }

    static void TruncatedNormal(Tensor w, Generator? gen)
    {
        // Rejection-free: draw normal(0, 0.01) and redraw entries outside [-0.02, 0.02] until none remain.
        w.normal_(0, 0.01, gen);
        for (int i = 0; i < 100; i++)
        {
            using var outside = w.abs().gt(0.02);
            if (!outside.any().item<bool>()) break;
            using var fresh = empty_like(w).normal_(0, 0.01, gen);
            w.copy_(where(outside, fresh, w));
        }
    }

    /// <summary>f(x) = dropout(up(act(down(LN?(x)))) · s) in float32, cast to <paramref name="dtype"/>.</summary>
    public Tensor Bottleneck(Tensor x, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var up = ScaledUp(x);
        if (config.Dropout > 0 && training) up = nn.functional.dropout(up, config.Dropout, training: true);
        return up.to_type(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>up(act(down(LN?(x)))) · s in float32, before dropout: what AdapterHub returns as the adapter's <c>up</c>
    /// and feeds to AdapterFusion.</summary>
    public Tensor ScaledUp(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x.dtype == ScalarType.Float32 ? x : x.to_type(ScalarType.Float32);
        if (normBefore is not null) h = normBefore.forward(h);
        var up = adapter_up.forward(BottleneckActivation.Apply(config.NonLinearity, down.forward(h)));
        up = scaling is null ? up.mul(constantScaling) : up.mul(scaling);
        return up.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A serial adapter's new sub-layer output, given the residual stream <paramref name="h"/> entering the sub-layer and
    /// the sub-layer output <paramref name="o"/>: the block adds it to h, so that h + result is AdapterHub's stream.
    /// </summary>
    public Tensor SerialOutput(Tensor h, Tensor o)
    {
        using var scope = NewDisposeScope();
        var x = config.OriginalLnBefore ? o.add(h) : o;
        var residual = config.ResidualBeforeLn == "true" ? o : x; // false: the adapter input ("post_add" is refused by the config)
        var a = Bottleneck(x, o.dtype);
        Tensor result;
        if (adapter_norm_after is not null && config.AdapterResidualBeforeLn) result = NormAfter(a.add(residual));
        else if (adapter_norm_after is not null) result = NormAfter(a).add(residual);
        else result = a.add(residual);
        // AdapterHub adds h last (original_ln_after); without it the stream is the result alone, so h is taken back out.
        if (!config.OriginalLnAfter) result = result.sub(h);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A parallel adapter's term beside the sub-layer, from the residual stream <paramref name="h"/> entering it:
    /// LN?(f(h)) (minus h without <c>original_ln_after</c>, as AdapterHub then leaves h out of the stream).
    /// </summary>
    public Tensor ParallelTerm(Tensor h, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var a = Bottleneck(h, dtype);
        if (adapter_norm_after is not null) a = NormAfter(a);
        if (!config.OriginalLnAfter) a = a.sub(h);
        return a.MoveToOuterDisposeScope();
    }

    /// <summary>The block's residual stream after the sub-layer (what replaces <c>h + o</c>).</summary>
    public Tensor Apply(Tensor h, Tensor o)
    {
        using var scope = NewDisposeScope();
        var stream = IsParallel ? h.add(o).add_(ParallelTerm(h, o.dtype)) : h.add(SerialOutput(h, o));
        return stream.MoveToOuterDisposeScope();
    }

    Tensor NormAfter(Tensor a) => adapter_norm_after!.forward(a.to_type(ScalarType.Float32)).to_type(a.dtype);
}
