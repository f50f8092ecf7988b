using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// AdapterFusion at one sub-layer of one block (Pfeiffer et al. 2021; AdapterHub's <c>BertFusion</c>): attention over the
/// outputs of N frozen bottleneck adapters. With q = Query(query) [B, T, H], adapter outputs u_i [B, T, H],
/// k_i = Key(u_i), v_i = Value(u_i):
/// <code>p = softmax_i((q · k_i) / T)      context = Σ_i p_i v_i + residual</code>
/// No 1/√H scaling (AdapterHub has none). Parameter names as AdapterHub saves them: <c>query</c>, <c>key</c> (with
/// bias), <c>value</c> (no bias), and <c>dense</c> (hidden → 1) when the config has none of the three.
/// Weights are float32 like the adapters'; the computation runs in float32 and returns the stream's dtype.
/// </summary>
public sealed class FusionLayer : nn.Module
{
#pragma warning disable IDE1006 // AdapterHub's parameter names
    /// <summary>The query projection (hidden → hidden, with bias), when the config has <c>query</c>.</summary>
    public Linear? query;
    /// <summary>The key projection (hidden → hidden, with bias), when the config has <c>key</c>.</summary>
    public Linear? key;
    /// <summary>The value projection (hidden → hidden, no bias), when the config has <c>value</c>.</summary>
    public Linear? value;
    /// <summary>AdapterHub's unused scorer (hidden → 1), present only when the config has none of query, key, value.</summary>
    public Linear? dense;
#pragma warning restore IDE1006
    readonly double dropout;
    readonly double reduction;

    /// <summary>A fusion layer for adapters of width <paramref name="hiddenSize"/>, initialised as AdapterHub does.</summary>
    public FusionLayer(AdapterFusionConfig config, int hiddenSize, Device device, Generator? generator) : base("BertFusion")
    {
        Config = config;
        var f32 = ScalarType.Float32;
        if (!config.Query && !config.Key && !config.Value) dense = new Linear(hiddenSize, 1, hasBias: true, dtype: f32, device: device);
        if (config.Query) query = new Linear(hiddenSize, hiddenSize, hasBias: true, dtype: f32, device: device);
        if (config.Key) key = new Linear(hiddenSize, hiddenSize, hasBias: true, dtype: f32, device: device);
        if (config.Value) value = new Linear(hiddenSize, hiddenSize, hasBias: false, dtype: f32, device: device);
        dropout = config.DropoutProb ?? 0.0;
        CurrentTemperature = config.Temperature ? 50.0 : 1.0;
        reduction = CurrentTemperature / 1000.0;
        Initialize(hiddenSize, generator);
        RegisterComponents();
    }

    /// <summary>The fusion's config.</summary>
    public AdapterFusionConfig Config { get; }

    /// <summary>The softmax temperature the next forward uses (AdapterHub lowers it by 1/1000 of its start per forward call, down to 1).</summary>
    public double CurrentTemperature { get; private set; }

    void Initialize(int hiddenSize, Generator? gen)
    {
        if ((query ?? key ?? value ?? dense)!.weight.device_type == DeviceType.META) return;
        using var _ = no_grad();
        foreach (var linear in new[] { query, key, value })
        {
            if (linear is null) continue;
            linear.weight.normal_(0, 0.02, gen); // BERT's init_bert_weights
            linear.bias?.zero_();
        }
        if (value is not null && Config.ValueInitialized)
        {
            value.weight.fill_(1e-6);
            value.weight.diagonal().fill_(1.0);
        }
        if (dense is not null)
        {
            // torch's nn.Linear default (kaiming_uniform with a = √5, i.e. U(±1/√fan_in)); the layer is never used in the forward.
            double bound = 1.0 / Math.Sqrt(hiddenSize);
            dense.weight.uniform_(-bound, bound, gen);
            dense.bias!.uniform_(-bound, bound, gen);
        }
    }

    /// <summary>
    /// Fuses adapter outputs <paramref name="adapterOutputs"/> [B, T, N, H] for <paramref name="queryInput"/> [B, T, H], adding
    /// <paramref name="residual"/> [B, T, H] before (<c>residual_before</c>) or after; returns [B, T, H] in the residual's dtype.
    /// When <paramref name="attention"/> is given it receives the attention probabilities [B, T, N] (detached, float32).
    /// </summary>
    public Tensor Forward(Tensor queryInput, Tensor adapterOutputs, Tensor residual, Action<Tensor>? attention = null)
    {
        using var scope = NewDisposeScope();
        var f32 = ScalarType.Float32;
        var r = residual.to_type(f32);
        var u = adapterOutputs.to_type(f32);
        // AdapterHub adds the residual in place into the one tensor it passes as both key and value input.
        if (Config.ResidualBefore) u = u.add(r.unsqueeze(2));
        var q = queryInput.to_type(f32);
        if (query is not null) q = query.forward(q);
        var k = key is null ? u : key.forward(u);
        var v = value is not null && Config.ValueBeforeSoftmax ? value.forward(u) : u;
        var scores = matmul(q.unsqueeze(2), k.transpose(-2, -1)).squeeze(2); // [B, T, N]
        if (dropout > 0 && training) scores = nn.functional.dropout(scores, dropout, training: true);
        var probs = softmax(scores.div(CurrentTemperature), -1);
        CurrentTemperature = Math.Max(CurrentTemperature - reduction, 1.0);
        attention?.Invoke(probs.detach().clone().MoveToOuterDisposeScope());
        var context = matmul(probs.unsqueeze(2), v).squeeze(2); // [B, T, H]
        if (value is not null && !Config.ValueBeforeSoftmax) context = value.forward(context);
        if (!Config.ResidualBefore) context = context.add(r);
        return context.to_type(residual.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>AdapterHub's regularisation term for this layer, 0.01·‖I − V‖² (null without a value projection).</summary>
    public Tensor? RegularizationLoss()
    {
        if (value is null) return null;
        using var scope = NewDisposeScope();
        using var identity = eye(value.weight.shape[0], dtype: value.weight.dtype, device: value.weight.device);
        return identity.sub(value.weight).pow(2).sum().mul(0.01).MoveToOuterDisposeScope();
    }
}
