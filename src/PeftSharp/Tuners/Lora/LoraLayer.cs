using PeftSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// What every LoRA layer (<see cref="LoraLinear"/>, <see cref="LoraEmbedding"/>) keeps and does alike, as PEFT's
/// <c>LoraLayer</c>: per-adapter settings, which adapters are active, merged, disabled or chosen per row, and the
/// operations <see cref="LoraModel"/> applies to all its layers.
/// </summary>
public abstract class LoraLayer : ILayerTuner
{
    private protected readonly Dictionary<string, LoraAdapterSettings> settings = new(StringComparer.Ordinal);
    private protected readonly List<string> merged = [];

    /// <summary>Per-adapter settings (rank, alpha, scaling, dropout, DoRA...), by name.</summary>
    public IReadOnlyDictionary<string, LoraAdapterSettings> Adapters => settings;
    /// <summary>Adapters that act in the forward, in order.</summary>
    public IReadOnlyList<string> ActiveAdapters { get; set; } = [];
    /// <summary>Adapters folded into the base weight, in the order they were merged (unmerged in reverse).</summary>
    public IReadOnlyList<string> MergedAdapters => merged;
    /// <summary>Whether any adapter is merged into the base weight.</summary>
    public bool Merged => merged.Count > 0;
    /// <summary>While true, the layer computes its base output only (merged adapters are unmerged first, as PEFT).</summary>
    public bool Disabled { get; set; }
    /// <summary>Per-row adapter names for the next forwards (PEFT's <c>adapter_names</c>; "__base__" = none).</summary>
    public IReadOnlyList<string>? RowAdapters { get; set; }

    /// <summary>
    /// Adds adapter <paramref name="name"/> with factors in <paramref name="dtype"/>, initialised as <c>init_lora_weights</c> says, drawing from <paramref name="generator"/>.
    /// </summary>
    /// <exception cref="PeftSharpException">The name exists, or the settings are not supported on this layer.</exception>
    public abstract void AddAdapter(string name, LoraAdapterSettings s, ScalarType dtype = ScalarType.Float32, Generator? generator = null);
    /// <summary>Removes an adapter's factors; does nothing if the layer lacks it.</summary>
    /// <exception cref="PeftSharpException">The adapter is merged.</exception>
    public abstract void DeleteAdapter(string name);
    /// <summary>The adapter's update of the host weight, as float32 in the host weight's layout.</summary>
    public abstract Tensor DeltaWeight(string adapter);
    /// <summary>
    /// Base output plus each active (unmerged) adapter's term: <c>lora_B(lora_A(dropout(x))) · scaling</c> (DoRA rescales by its magnitude).
    /// </summary>
    public abstract Tensor Forward(Tensor input);
    /// <summary>Folds the given (default: active) adapters into the base weight; safe refuses non-finite results.</summary>
    public abstract void Merge(IEnumerable<string>? adapters = null, bool safe = false);
    /// <summary>Takes merged adapters back out of the base weight, last merged first.</summary>
    public abstract void Unmerge();
    /// <summary>Removes the LoRA modules from the host layer, which then computes its base output only.</summary>
    public abstract void Detach();
}
