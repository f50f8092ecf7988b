using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp.Modules;

namespace PeftSharp.Tuners;

/// <summary>
/// A base model with adapters of any registered method (PEFT's <c>PeftModel</c> and, for several methods at once,
/// <c>PeftMixedModel</c>): loading a folder dispatches on its <c>peft_type</c> through <see cref="TunerRegistry"/>;
/// switching, disabling, merging, saving and parameter counts go through every method's <see cref="ITunerModel"/>.
/// Adapters are named; names are unique across methods. Methods compose in the order their first adapter was added
/// (docs/architecture.md).
/// </summary>
public sealed class PeftModel
{
    readonly List<ITunerModel> tuners = [];
    string[] active = [];

    /// <summary>Wraps <paramref name="model"/> and freezes all its parameters; add adapters through the tuners.</summary>
    public PeftModel(CausalLM model)
    {
        Model = model;
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <summary>The base model.</summary>
    public CausalLM Model { get; }

    /// <summary>The tuner models in the order they were attached.</summary>
    public IReadOnlyList<ITunerModel> Tuners => tuners;

    /// <summary>Every adapter name, in the order added.</summary>
    public IReadOnlyList<string> Adapters => tuners.SelectMany(t => t.Adapters).ToList();
    /// <summary>The adapters that act in the forward, in order.</summary>
    public IReadOnlyList<string> ActiveAdapters => active;

    /// <summary>The tuner model of one type (LoraModel, IA3Model, ...), or null when none is attached.</summary>
    public T? Get<T>() where T : class, ITunerModel => tuners.OfType<T>().FirstOrDefault();

    /// <summary>The tuner model holding an adapter.</summary>
    public ITunerModel TunerOf(string adapter) =>
        tuners.FirstOrDefault(t => t.Adapters.Contains(adapter)) ?? throw new PeftSharpException($"no adapter named \"{adapter}\" (have: {string.Join(", ", Adapters)})");

    /// <summary>The config of adapter <paramref name="adapter"/>, from the tuner that holds it.</summary>
    /// <exception cref="PeftSharpException">No adapter of that name.</exception>
    public PeftConfig ConfigOf(string adapter) => TunerOf(adapter).ConfigOf(adapter);

    ITunerModel TunerFor(ITuner tuner)
    {
        var existing = tuners.FirstOrDefault(t => t.Tuner.PeftType == tuner.PeftType);
        if (existing is not null) return existing;
        var created = tuner.Attach(Model);
        tuners.Add(created);
        return created;
    }

    void CheckNewName(string name)
    {
        if (Adapters.Contains(name)) throw new PeftSharpException($"adapter \"{name}\" already exists");
    }

    /// <summary>PEFT's get_peft_model / add_adapter: a new adapter from a config, dispatched on its peft_type; not active until <see cref="SetAdapter"/>.</summary>
    public ITunerModel AddAdapter(string name, PeftConfig config, long? seed = null, bool trainable = true)
    {
        CheckNewName(name);
        var tuner = TunerFor(TunerRegistry.Get(config.PeftType ?? config.ExpectedPeftType, "peft_type"));
        tuner.AddAdapter(name, config, seed, trainable);
        Refresh();
        return tuner;
    }

    /// <summary>PEFT's load_adapter: loads a folder of any registered method; not active until <see cref="SetAdapter"/>.</summary>
    public ITunerModel LoadAdapter(string dir, string name = AdapterFiles.DefaultAdapter, bool trainable = false)
    {
        CheckNewName(name);
        var tuner = TunerFor(TunerRegistry.ForFolder(dir));
        tuner.LoadAdapter(dir, name, trainable);
        Refresh();
        return tuner;
    }

    /// <summary>Loads adapter folders onto a model and makes them all active (the first is named "default").</summary>
    public static PeftModel Load(CausalLM model, IReadOnlyList<string> dirs, IReadOnlyList<string>? names = null, bool trainable = false)
    {
        names ??= dirs.Select((d, i) => i == 0 ? AdapterFiles.DefaultAdapter : $"adapter{i}").ToList();
        var peft = new PeftModel(model);
        for (int i = 0; i < dirs.Count; i++) peft.LoadAdapter(dirs[i], names[i], trainable);
        peft.SetAdapter([.. names]);
        return peft;
    }

    /// <summary>Makes these adapters the active ones, whatever their methods; only they can train.</summary>
    public void SetAdapter(params string[] names)
    {
        foreach (var n in names) TunerOf(n);
        active = names;
        Refresh();
    }

    /// <summary>Re-applies the active set to every tuner (attaching a tuner freezes what it did not add).</summary>
    void Refresh()
    {
        foreach (var t in tuners) t.SetAdapter(active.Where(n => t.Adapters.Contains(n)).ToList());
    }

    /// <summary>Makes an adapter trainable or frozen (PEFT's set_requires_grad).</summary>
    /// <exception cref="PeftSharpException">No adapter of that name.</exception>
    public void SetTrainable(string name, bool trainable)
    {
        TunerOf(name).SetTrainable(name, trainable);
        Refresh();
    }

    /// <summary>Removes an adapter (PEFT's delete_adapter) and from the active set.</summary>
    /// <exception cref="PeftSharpException">No adapter of that name, or it is merged.</exception>
    public void DeleteAdapter(string name)
    {
        TunerOf(name).DeleteAdapter(name);
        active = active.Where(a => a != name).ToArray();
        Refresh();
    }

    /// <summary>While the returned scope lives the model computes its base output only.</summary>
    public IDisposable DisableAdapters()
    {
        var scopes = tuners.Select(t => t.DisableAdapters()).ToList();
        return new OnDispose(() => { foreach (var s in Enumerable.Reverse(scopes)) s.Dispose(); });
    }

    /// <summary>Why the given (default: active) adapters cannot be merged, or null when they can.</summary>
    public string? MergeUnsupported(IReadOnlyList<string>? adapters = null) =>
        TunersOf(adapters ?? active).Select(t => t.MergeUnsupported).FirstOrDefault(r => r is not null);

    IEnumerable<ITunerModel> TunersOf(IEnumerable<string> adapters) => adapters.Select(TunerOf).Distinct();

    /// <summary>Folds the given (default: active) adapters into the base weights, method by method in composition order.</summary>
    public void Merge(IReadOnlyList<string>? adapters = null, bool safe = false)
    {
        var names = adapters ?? active;
        if (MergeUnsupported(names) is string reason) throw new PeftSharpException(reason);
        foreach (var t in tuners) t.Merge(names.Where(n => t.Adapters.Contains(n)).ToList(), safe);
    }

    /// <summary>Unmerges every tuner's merged adapters, the last attached tuner first.</summary>
    public void Unmerge()
    {
        foreach (var t in Enumerable.Reverse(tuners)) t.Unmerge();
    }

    /// <summary>PEFT's merge_and_unload: merges the given (default: active) adapters and removes every adapter.</summary>
    public CausalLM MergeAndUnload(bool safe = false, IReadOnlyList<string>? adapters = null)
    {
        Merge(adapters, safe);
        return Unload();
    }

    /// <summary>Removes every adapter without merging (merged ones stay folded in).</summary>
    public CausalLM Unload()
    {
        foreach (var t in Enumerable.Reverse(tuners)) t.Unload();
        tuners.Clear();
        active = [];
        foreach (var p in Model.parameters()) p.requires_grad = false;
        return Model;
    }

    /// <summary>Writes one adapter in PEFT's layout (subfolder for names other than "default").</summary>
    public string Save(string dir, string adapter = AdapterFiles.DefaultAdapter, string? baseModelNameOrPath = null) =>
        TunerOf(adapter).SaveAdapter(dir, adapter, baseModelNameOrPath);

    /// <summary>Parameters that training updates, by name (requires_grad = true).</summary>
    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters() =>
        Model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();

    /// <summary>
    /// Trainable and total parameter counts as PEFT's <c>get_nb_trainable_parameters</c>: the model's parameters (a 4-bit
    /// weight counts numel × 2) plus what tuners keep outside the model (inactive modules_to_save copies).
    /// </summary>
    public (long Trainable, long All) CountParameters()
    {
        long all = Model.parameters().Sum(Quantization.QuantizedModels.PeftParameterCount) + tuners.Sum(t => t.ExtraParameterCount);
        long train = Model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        return (train, all);
    }

    /// <summary>PEFT's <c>print_trainable_parameters</c> line.</summary>
    public string ParameterReport()
    {
        var (t, a) = CountParameters();
        return FormatReport(t, a);
    }

    /// <summary>
    /// PEFT's print_trainable_parameters line: <c>trainable params: N
    /// all params: N
    /// trainable%: P</c>.
    /// </summary>
    public static string FormatReport(long trainable, long all) =>
        string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"trainable params: {trainable:N0} || all params: {all:N0} || trainable%: {100.0 * trainable / all:F4}");
}
