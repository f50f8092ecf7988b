using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Prompts;

namespace PeftSharp.Server.Adapters;

/// <summary>
/// Adapters of every type PeftSharp reads, on the one served base model. A folder is loaded through
/// <see cref="TunerRegistry"/> (by its <c>peft_type</c>, or as an AdapterHub folder) into the tuner model of its method;
/// every adapter stays inactive outside the engine's scopes, so a forward without a scope is the base model.
/// How a slot's rows run depends on its method (<see cref="RowMode"/>):
/// <list type="bullet">
/// <item>LoRA and its variants (DoRA, rsLoRA...): <see cref="RowMode.Gathered"/> — one forward for a mixed batch, each
/// LoRA layer adds its rows' low-rank terms (<see cref="LoraModel.UseRowAdapters"/>);</item>
/// <item>prompt tuning, P-tuning, prefix tuning: <see cref="RowMode.PrefillOnly"/> — the virtual tokens or prefix keys
/// enter the row's KV cache on the prompt's forward; later steps only read the cache;</item>
/// <item>every other method ((IA)³, bottleneck adapters, AdaLoRA...): <see cref="RowMode.OwnBatch"/> — the adapter is
/// made active for a forward over its own rows.</item>
/// </list>
/// LLM-Adapters' BOTTLENECK format names no adapter in its keys, so one such adapter is resident at a time
/// (<see cref="Blocker"/>).
/// </summary>
public sealed class PeftAdapterBackend(CausalLM model) : IAdapterBackend
{
    const string BaseRow = "__base__";

    sealed record Entry(ITunerModel Tuner, RowMode Mode, bool OwnsTuner, int Leading);

    readonly Dictionary<string, Entry> slots = new(StringComparer.Ordinal);
    readonly Dictionary<string, ITunerModel> shared = new(StringComparer.Ordinal); // by peft_type

    public void Load(string slot, string dir)
    {
        if (slots.ContainsKey(slot)) throw new PeftSharpException($"adapter slot {slot} is already loaded");
        var tuner = TunerRegistry.ForFolder(dir);
        var config = tuner.LoadConfig(dir);
        bool single = tuner.PeftType == BottleneckConfig.PeftTypeName;
        if (single && Blocker(dir) is not null)
            throw new PeftSharpException($"{dir}: another BOTTLENECK adapter is loaded (LLM-Adapters' format holds one per model)");
        CheckServable(config, dir);
        ITunerModel tunerModel;
        if (single) tunerModel = tuner.Attach(model);
        else if (!shared.TryGetValue(tuner.PeftType, out tunerModel!)) shared[tuner.PeftType] = tunerModel = tuner.Attach(model);
        var mode = tunerModel is LoraModel ? RowMode.Gathered
            : config is PromptLearningConfig ? RowMode.PrefillOnly
            : RowMode.OwnBatch;
        if (mode == RowMode.Gathered && config is LoraConfig { ModulesToSave.Count: > 0 })
            throw new PeftSharpException($"{dir}: LoRA adapters with modules_to_save cannot be mixed per row in a batch");
        try
        {
            tunerModel.LoadAdapter(dir, slot, trainable: false);
            tunerModel.SetAdapter([]); // active only inside the engine's scopes
        }
        catch
        {
            if (single) tunerModel.Unload();
            else if (tunerModel.Adapters.Contains(slot)) tunerModel.DeleteAdapter(slot);
            throw;
        }
        slots[slot] = new Entry(tunerModel, mode, single, config is PromptLearningConfig prompt ? prompt.NumVirtualTokens ?? 0 : 0);
        model.eval();
    }

    /// <summary>Refuses adapters that would change the shared base model itself (trained biases are saved as base weights).</summary>
    static void CheckServable(PeftConfig config, string dir)
    {
        string? bias = config switch
        {
            LoraConfig l => l.Bias,
            BottleneckConfig b => b.Bias,
            _ => null,
        };
        if (bias is not (null or "none"))
            throw new PeftSharpException($"{dir}: bias \"{bias}\" trains the base model's biases, which every other request shares; only bias \"none\" can be served");
    }

    public void Unload(string slot)
    {
        if (!slots.Remove(slot, out var entry)) return;
        if (entry.OwnsTuner) entry.Tuner.Unload();
        else entry.Tuner.DeleteAdapter(slot);
        entry.Tuner.SetAdapter([]);
    }

    public RowMode ModeOf(string slot) =>
        slots.TryGetValue(slot, out var e) ? e.Mode : throw new PeftSharpException($"adapter slot {slot} is not loaded");

    public int LeadingPositions(string slot) =>
        slots.TryGetValue(slot, out var e) ? e.Leading : throw new PeftSharpException($"adapter slot {slot} is not loaded");

    public string? Blocker(string dir)
    {
        if (TunerRegistry.ForFolder(dir).PeftType != BottleneckConfig.PeftTypeName) return null;
        return slots.FirstOrDefault(s => s.Value.OwnsTuner).Key;
    }

    public IDisposable UseRows(IReadOnlyList<string?> rowSlots)
    {
        if (!shared.TryGetValue(PeftTypes.Lora, out var t) || t is not LoraModel lora) return NoScope.Instance;
        var names = rowSlots.Select(s => s is not null && slots.TryGetValue(s, out var e) && e.Mode == RowMode.Gathered ? s : BaseRow).ToList();
        if (names.All(n => n == BaseRow)) return NoScope.Instance;
        return lora.UseRowAdapters(names);
    }

    public IDisposable Use(string slot)
    {
        if (!slots.TryGetValue(slot, out var entry)) throw new PeftSharpException($"adapter slot {slot} is not loaded");
        entry.Tuner.SetAdapter([slot]);
        return new Scope(() => entry.Tuner.SetAdapter([]));
    }

    sealed class NoScope : IDisposable
    {
        public static readonly NoScope Instance = new();
        public void Dispose() { }
    }

    sealed class Scope(Action onDispose) : IDisposable
    {
        bool done;
        public void Dispose()
        {
            if (done) return;
            done = true;
            onDispose();
        }
    }
}
