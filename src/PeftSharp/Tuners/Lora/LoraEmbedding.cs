using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Embedding = PeftSharp.Models.Layers.Embedding;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// LoRA on an embedding table, as PEFT's <c>lora.Embedding</c>: parameters <c>lora_embedding_A.{adapter}</c>
/// [r, num_embeddings] (initialised to zero) and <c>lora_embedding_B.{adapter}</c> [dim, r] (standard normal), and
/// <c>y = E[ids] + (A[:, ids]ᵀ · Bᵀ) · scaling</c>. The update of the table is ΔE = (B·A)ᵀ · scaling.
/// </summary>
public sealed class LoraEmbedding : LoraLayer
{
    ParameterDict loraA = new();
    ParameterDict loraB = new();

    /// <summary>Attaches a LoRA layer (no adapters yet) to the embedding <paramref name="host"/>.</summary>
    public LoraEmbedding(Embedding host)
    {
        Host = host;
        host.register_module("lora_embedding_A", loraA);
        host.register_module("lora_embedding_B", loraB);
        host.AddTuner(this);
    }

    /// <summary>The adapted embedding.</summary>
    public Embedding Host { get; }

    /// <summary>lora_embedding_A [r, num_embeddings] of an adapter.</summary>
    public Parameter A(string adapter) => loraA[adapter];
    /// <summary>lora_embedding_B [dim, r] of an adapter.</summary>
    public Parameter B(string adapter) => loraB[adapter];

    /// <inheritdoc/>
    public override void AddAdapter(string name, LoraAdapterSettings s, ScalarType dtype = ScalarType.Float32, Generator? generator = null)
    {
        if (s.UseDora) throw new PeftSharpException("DoRA is not supported on embedding layers");
        if (settings.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists on this layer");
        long count = Host.weight.shape[0], dim = Host.weight.shape[1];
        var device = Host.weight.device;
        var a = empty([s.Rank, count], dtype, device);
        var b = empty([dim, s.Rank], dtype, device);
        if (device.type != DeviceType.META)
        {
            using var _ = no_grad();
            switch (s.Init)
            {
                case "true" or "gaussian":
                    a.zero_();
                    b.copy_(randn(b.shape, ScalarType.Float32, generator: generator));
                    break;
                case "false":
                    a.copy_(randn(a.shape, ScalarType.Float32, generator: generator));
                    b.copy_(randn(b.shape, ScalarType.Float32, generator: generator));
                    break;
                default:
                    throw new PeftSharpException($"init_lora_weights \"{s.Init}\" is not supported for embedding layers");
            }
        }
        loraA.Add((name, new Parameter(a)));
        loraB.Add((name, new Parameter(b)));
        settings[name] = s;
    }

    /// <summary>ΔE = (B·A)ᵀ·s as float32 [num_embeddings, dim].</summary>
    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = NewDisposeScope();
        var delta = loraB[adapter].to_type(ScalarType.Float32).matmul(loraA[adapter].to_type(ScalarType.Float32)).t().mul(settings[adapter].Scaling);
        return delta.contiguous().MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor ids)
    {
        if (Disabled)
        {
            if (Merged) Unmerge();
            return Host.BaseForward(ids);
        }
        if (Merged) return Host.BaseForward(ids);
        using var scope = NewDisposeScope();
        var result = Host.BaseForward(ids);
        if (RowAdapters is not null)
        {
            result = result.clone();
            foreach (var group in RowAdapters.Select((name, row) => (name, row)).GroupBy(p => p.name))
            {
                if (!settings.ContainsKey(group.Key)) continue;
                var rows = tensor(group.Select(p => (long)p.row).ToArray(), device: ids.device);
                result.index_add_(0, rows, Delta(group.Key, ids.index_select(0, rows)).to_type(result.dtype), 1);
            }
            return result.MoveToOuterDisposeScope();
        }
        foreach (var name in ActiveAdapters)
            if (settings.ContainsKey(name)) result = result.add(Delta(name, ids).to_type(result.dtype));
        return result.MoveToOuterDisposeScope();
    }

    Tensor Delta(string name, Tensor ids)
    {
        var a = loraA[name];
        long[] shape = [.. ids.shape, a.shape[0]];
        var afterA = a.t().index_select(0, ids.reshape(-1)).view(shape); // embedding lookup into Aᵀ
        return afterA.matmul(loraB[name].t()).mul(settings[name].Scaling);
    }

    /// <inheritdoc/>
    public override void Merge(IEnumerable<string>? adapters = null, bool safe = false)
    {
        using var _ = no_grad();
        foreach (var name in (adapters ?? ActiveAdapters).ToList())
        {
            if (!settings.ContainsKey(name) || merged.Contains(name)) continue;
            using var scope = NewDisposeScope();
            var updated = Host.weight.to_type(ScalarType.Float32).add(DeltaWeight(name));
            if (safe && !updated.isfinite().all().item<bool>())
                throw new PeftSharpException($"merging adapter \"{name}\" would put NaN or infinite values into the embedding; not merged");
            Host.weight.copy_(updated);
            merged.Add(name);
        }
    }

    /// <inheritdoc/>
    public override void Unmerge()
    {
        using var _ = no_grad();
        while (merged.Count > 0)
        {
            using var scope = NewDisposeScope();
            Host.weight.copy_(Host.weight.to_type(ScalarType.Float32).sub(DeltaWeight(merged[^1])));
            merged.RemoveAt(merged.Count - 1);
        }
    }

    /// <inheritdoc/>
    public override void DeleteAdapter(string name)
    {
        if (merged.Contains(name)) throw new PeftSharpException($"adapter \"{name}\" is merged; unmerge it before deleting it");
        if (!settings.Remove(name)) return;
        // Rebuild the dictionaries without the adapter: re-registering under the same name replaces them.
        loraA = Without(loraA, name);
        loraB = Without(loraB, name);
        Host.register_module("lora_embedding_A", loraA);
        Host.register_module("lora_embedding_B", loraB);
        ActiveAdapters = ActiveAdapters.Where(a => a != name).ToArray();
    }

    static ParameterDict Without(ParameterDict dict, string name)
    {
        var kept = new ParameterDict();
        foreach (var key in dict.keys()) if (key != name) kept.Add((key, dict[key]));
        return kept;
    }

    /// <inheritdoc/>
    public override void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule("lora_embedding_A");
        Host.RemoveSubmodule("lora_embedding_B");
    }
}
