using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.IA3;

/// <summary>
/// (IA)³ on one linear layer (nn.Linear or GPT-2 Conv1D), as PEFT's <c>ia3.Linear</c>. Each adapter is one vector
/// <c>ia3_l.{adapter}</c>: [out, 1] for an ordinary target, which scales the layer's output (bias included), or
/// [1, in] for a feed-forward target, which scales the layer's input. Active adapters multiply:
/// <c>y = base(x)·∏lᵢ</c> or <c>y = base(x·∏lᵢ)</c>.
/// </summary>
public sealed class IA3Layer : ILayerTuner
{
    readonly ParameterDict vectors = new();
    readonly List<string> merged = [];

    /// <summary>
    /// Attaches an (IA)³ layer (no adapters yet) to <paramref name="host"/>; <paramref name="isFeedforward"/> scales the input instead of the output.
    /// </summary>
    public IA3Layer(Linear host, bool isFeedforward)
    {
        Host = host;
        IsFeedforward = isFeedforward;
        host.register_module("ia3_l", vectors);
        host.AddTuner(this);
    }

    /// <summary>The adapted linear layer.</summary>
    public Linear Host { get; }

    /// <summary>True when the vector scales the input (PEFT's is_feedforward).</summary>
    public bool IsFeedforward { get; }

    /// <summary>Adapter names on this layer.</summary>
    public IEnumerable<string> Adapters => vectors.keys();
    /// <summary>Whether the layer has adapter <paramref name="adapter"/>.</summary>
    public bool Contains(string adapter) => vectors.ContainsKey(adapter);
    /// <summary>The learned scaling vector of an adapter (<see cref="VectorShape"/>).</summary>
    public Parameter Vector(string adapter) => vectors[adapter];
    /// <summary>Adapters that act in the forward.</summary>
    public IReadOnlyList<string> ActiveAdapters { get; set; } = [];
    /// <summary>Adapters folded into the base weight, in merge order.</summary>
    public IReadOnlyList<string> MergedAdapters => merged;
    /// <summary>While true, the layer computes its base output only.</summary>
    public bool Disabled { get; set; }

    /// <summary>The vector's shape: [1, in] (feed-forward) or [out, 1].</summary>
    public long[] VectorShape => IsFeedforward ? [1, Host.InFeatures] : [Host.OutFeatures, 1];

    /// <summary>
    /// Adds an adapter vector: ones when <paramref name="init"/> (PEFT's init_ia3_weights, a no-op start), otherwise random.
    /// </summary>
    /// <exception cref="PeftSharpException">The name exists.</exception>
    public void AddAdapter(string name, bool init, Generator? generator = null)
    {
        if (vectors.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists on this layer");
        var device = Host.weight.device;
        // As PEFT: randn, then ones when init_ia3_weights (the identity).
        var value = device.type == DeviceType.META ? empty(VectorShape, ScalarType.Float32, device)
            : init ? ones(VectorShape, ScalarType.Float32, device)
            : randn(VectorShape, ScalarType.Float32, generator: generator).to(device);
        vectors.Add((name, new Parameter(value)));
    }

    /// <summary>Removes an adapter's vector; does nothing if the layer lacks it.</summary>
    /// <exception cref="PeftSharpException">The adapter is merged.</exception>
    public void DeleteAdapter(string name)
    {
        if (merged.Contains(name)) throw new PeftSharpException($"adapter \"{name}\" is merged; unmerge it before deleting it");
        if (!vectors.ContainsKey(name)) return;
        var kept = vectors.keys().Where(k => k != name).Select(k => (k, vectors[k])).ToList();
        var removed = vectors[name];
        vectors.clear();
        foreach (var item in kept) vectors.Add(item);
        removed.Dispose();
        ActiveAdapters = ActiveAdapters.Where(a => a != name).ToArray();
    }

    /// <summary>The product of the active vectors, flattened, or null when none is active here.</summary>
    Tensor? Scaling(IEnumerable<string> adapters)
    {
        Tensor? product = null;
        foreach (var name in adapters)
        {
            if (!vectors.ContainsKey(name)) continue;
            var v = vectors[name].flatten();
            product = product is null ? v : product.mul(v);
        }
        return product;
    }

    /// <inheritdoc/>
    public Tensor Forward(Tensor x)
    {
        if (Disabled)
        {
            if (merged.Count > 0) Unmerge();
            return Host.BaseForward(x);
        }
        if (merged.Count > 0) return Host.BaseForward(x);
        using var scope = NewDisposeScope();
        var scaling = Scaling(ActiveAdapters);
        if (scaling is null) return Host.BaseForward(x).MoveToOuterDisposeScope();
        Tensor result;
        if (IsFeedforward)
            result = Host.BaseForward(x.to_type(scaling.dtype).mul(scaling).to_type(x.dtype));
        else
        {
            var y = Host.BaseForward(x);
            result = y.to_type(scaling.dtype).mul(scaling).to_type(y.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Folds adapters into the base weight: W[o, i] ← W[o, i]·l[o] (and b[o] ← b[o]·l[o]) for an ordinary target,
    /// W[o, i] ← W[o, i]·l[i] for a feed-forward one. A 4-bit base cannot be merged, as in PEFT.
    /// </summary>
    public void Merge(IEnumerable<string>? adapters = null, bool safe = false)
    {
        if (Host.IsQuantized) throw new PeftSharpException("(IA)³ cannot be merged into a 4-bit base model");
        using var _ = no_grad();
        foreach (var name in (adapters ?? ActiveAdapters).ToList())
        {
            if (!vectors.ContainsKey(name) || merged.Contains(name)) continue;
            using var scope = NewDisposeScope();
            var l = vectors[name].to_type(ScalarType.Float32);
            var w = Host.WeightOutIn.to_type(ScalarType.Float32).mul(l); // [out, 1] scales rows, [1, in] columns
            if (safe && !w.isfinite().all().item<bool>())
                throw new PeftSharpException($"merging adapter \"{name}\" would put NaN or infinite values into the base weight; not merged");
            Host.SetWeightOutIn(w.to_type(Host.weight.dtype));
            if (!IsFeedforward && Host.bias is not null)
                Host.bias.copy_(Host.bias.to_type(ScalarType.Float32).mul(l.flatten()).to_type(Host.bias.dtype));
            merged.Add(name);
        }
    }

    /// <summary>Undoes <see cref="Merge"/>, most recent adapter first, dividing by l + 1e-8 as PEFT does.</summary>
    public void Unmerge()
    {
        using var _ = no_grad();
        while (merged.Count > 0)
        {
            string name = merged[^1];
            merged.RemoveAt(merged.Count - 1);
            using var scope = NewDisposeScope();
            var l = vectors[name].to_type(ScalarType.Float32).add(1e-8);
            Host.SetWeightOutIn(Host.WeightOutIn.to_type(ScalarType.Float32).div(l).to_type(Host.weight.dtype));
            if (!IsFeedforward && Host.bias is not null)
                Host.bias.copy_(Host.bias.to_type(ScalarType.Float32).div(l.flatten()).to_type(Host.bias.dtype));
        }
    }

    /// <summary>Removes the (IA)³ vectors from the host layer, which then computes what lies beneath them.</summary>
    public void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule("ia3_l");
    }
}
