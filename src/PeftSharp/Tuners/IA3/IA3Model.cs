using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Embedding = PeftSharp.Models.Layers.Embedding;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.IA3;

/// <summary>
/// A model with (IA)³ adapters, as PEFT's <c>IA3Model</c>: finds the target linear layers (PEFT's per-model defaults
/// when target_modules is unset), attaches one <see cref="IA3Layer"/> per target, and switches, disables, merges and
/// unloads adapters by name. Active adapters multiply their vectors.
/// </summary>
public sealed class IA3Model : ITunerModel
{
    static readonly IA3Tuner TunerInstance = new();

    readonly Dictionary<string, IA3Config> configs = new(StringComparer.Ordinal);
    readonly Dictionary<string, IA3Layer> layers = new(StringComparer.Ordinal);
    readonly Dictionary<string, ModulesToSave> modulesToSave = new(StringComparer.Ordinal);
    readonly Dictionary<string, bool> trainable = new(StringComparer.Ordinal);
    string[] active = [];

    IA3Model(CausalLM model)
    {
        Model = model;
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <summary>An (IA)³ model on <paramref name="model"/> with no adapter yet (the base model is frozen).</summary>
    public static IA3Model Attach(CausalLM model) => new(model);

    /// <summary>PEFT's get_peft_model with an IA3Config: freeze the base model and add one trainable, active adapter.</summary>
    public static IA3Model Create(CausalLM model, IA3Config config, string adapterName = AdapterFiles.DefaultAdapter, long? seed = null)
    {
        var ia3 = new IA3Model(model);
        ia3.AddAdapter(adapterName, config, seed, trainable: true);
        ia3.SetAdapter(adapterName);
        return ia3;
    }

    /// <inheritdoc/>
    public ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    public CausalLM Model { get; }
    /// <summary>Adapter configs by name.</summary>
    public IReadOnlyDictionary<string, IA3Config> Configs => configs;
    /// <inheritdoc/>
    public IReadOnlyList<string> Adapters => [.. configs.Keys];
    /// <inheritdoc/>
    public IReadOnlyList<string> ActiveAdapters => active;
    /// <summary>(IA)³ layers by module path (e.g. <c>model.layers.0.mlp.down_proj</c>).</summary>
    public IReadOnlyDictionary<string, IA3Layer> Layers => layers;
    internal IReadOnlyDictionary<string, ModulesToSave> ModulesToSaveByPath => modulesToSave;
    /// <inheritdoc/>
    public PeftConfig ConfigOf(string adapter) => configs[adapter];

    /// <summary>PEFT's _check_target_module_feedforward: a regex full match, or a path ending with a listed name.</summary>
    public static bool IsFeedforward(IA3Config config, string path)
    {
        var ff = config.FeedforwardModules;
        if (ff is null) return false;
        if (ff.Regex is not null) return ModuleMatcher.FullMatchField("feedforward_modules", ff.Regex, path);
        return ff.Names!.Any(n => path.EndsWith(n, StringComparison.Ordinal));
    }

    void ITunerModel.AddAdapter(string name, PeftConfig config, long? seed, bool trainable) =>
        AddAdapter(name, config as IA3Config ?? throw new PeftSharpException($"adapter \"{name}\": a {config.GetType().Name} is not an (IA)³ config"), seed, trainable);

    /// <summary>Adds an adapter (inactive until <see cref="SetAdapter(string[])"/>), with PEFT's targeting rules and defaults.</summary>
    public void AddAdapter(string name, IA3Config config, long? seed = null, bool trainable = true)
    {
        if (configs.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists");
        if (name.Contains('.') || name.Length == 0) throw new PeftSharpException($"adapter name \"{name}\" must be non-empty and contain no '.'");
        IA3Defaults.ApplyTo(config, Model.Config.ModelType);
        var candidates = Model.Extensions.TunableLayers().ToList();
        if (config.TargetModules!.IsAllLinear)
            config.TargetModules = ModuleMatcher.ExpandAllLinear(candidates.Where(c => c.Layer is Linear).Select(c => c.Path), ["lm_head"]);
        using var gen = seed is long s ? new Generator((ulong)s) : null;
        var found = new List<(string Path, Linear Layer, bool Feedforward)>();
        foreach (var (path, module) in candidates)
        {
            if (ModuleMatcher.Match(config.TargetModules, config.ExcludeModules, config.ModulesToSave, path) != ModuleMatch.Targeted) continue;
            if (module is Embedding)
                throw new PeftSharpException($"target_modules: \"{path}\" is an embedding; (IA)³ supports linear layers only (as PEFT)");
            found.Add((path, (Linear)module, IsFeedforward(config, path)));
        }
        if (found.Count == 0)
        {
            var names = candidates.Select(c => c.Path.Split('.')[^1]).Distinct().OrderBy(n => n, StringComparer.Ordinal);
            throw new PeftSharpException(
                $"target_modules {config.TargetModules} matched no layer of this {Model.Config.ModelType} model; its layers are named: {string.Join(", ", names)}");
        }
        foreach (var (path, linear, feedforward) in found)
        {
            // PEFT sets fan_in_fan_out to match the layer it finds (true for GPT-2's Conv1D).
            config.FanInFanOut = linear.FanInFanOut;
            if (!layers.TryGetValue(path, out var layer)) layers[path] = layer = new IA3Layer(linear, feedforward);
            else if (layer.IsFeedforward != feedforward)
                throw new PeftSharpException($"feedforward_modules: \"{path}\" is feed-forward for one (IA)³ adapter and not for another");
            layer.AddAdapter(name, config.InitIa3Weights, gen);
            layer.ActiveAdapters = active;
        }
        foreach (var path in config.ModulesToSave ?? [])
        {
            var matches = Model.named_modules().Where(m => m.name == path || m.name.EndsWith("." + path, StringComparison.Ordinal)).ToList();
            if (matches.Count == 0) throw new PeftSharpException($"modules_to_save: no module named \"{path}\" in this model");
            foreach (var (modulePath, module) in matches)
            {
                if (!modulesToSave.TryGetValue(modulePath, out var m)) modulesToSave[modulePath] = m = new ModulesToSave(modulePath, module);
                m.AddAdapter(name);
            }
        }
        configs[name] = config;
        this.trainable[name] = trainable;
        UpdateRequiresGrad();
    }

    /// <inheritdoc/>
    public void LoadAdapter(string dir, string name, bool trainable = false) => IA3Files.LoadAdapter(this, dir, name, trainable);

    /// <inheritdoc/>
    public string SaveAdapter(string dir, string name, string? baseModelNameOrPath = null) => IA3Files.Save(this, dir, name, baseModelNameOrPath);

    void ITunerModel.SetAdapter(IReadOnlyList<string> names) => SetAdapter([.. names]);

    /// <summary>Makes these adapters the active ones (their vectors multiply); only they are trainable.</summary>
    public void SetAdapter(params string[] names)
    {
        foreach (var n in names)
            if (!configs.ContainsKey(n)) throw new PeftSharpException($"no adapter named \"{n}\" (have: {string.Join(", ", configs.Keys)})");
        active = names;
        foreach (var l in layers.Values) l.ActiveAdapters = names;
        foreach (var m in modulesToSave.Values)
        {
            string? adapter = names.FirstOrDefault(n => m.Adapters.Contains(n));
            m.Activate(adapter, adapter is not null && trainable[adapter]);
        }
        UpdateRequiresGrad();
    }

    /// <inheritdoc/>
    public void SetTrainable(string name, bool value)
    {
        if (!configs.ContainsKey(name)) throw new PeftSharpException($"no adapter named \"{name}\"");
        trainable[name] = value;
        UpdateRequiresGrad();
    }

    void UpdateRequiresGrad()
    {
        foreach (var (_, param, adapter) in AdapterParameters())
            param.requires_grad = active.Contains(adapter) && trainable[adapter];
    }

    /// <inheritdoc/>
    public void DeleteAdapter(string name)
    {
        if (!configs.Remove(name)) throw new PeftSharpException($"no adapter named \"{name}\"");
        foreach (var l in layers.Values) l.DeleteAdapter(name);
        foreach (var m in modulesToSave.Values) m.RemoveAdapter(name);
        trainable.Remove(name);
        SetAdapter(active.Where(a => a != name).ToArray());
    }

    /// <summary>Every (IA)³ vector with its parameter name (<c>{path}.ia3_l.{adapter}</c>) and adapter.</summary>
    public IEnumerable<(string Name, Parameter Param, string Adapter)> AdapterParameters()
    {
        foreach (var (path, layer) in layers)
            foreach (var adapter in layer.Adapters.ToList())
                yield return ($"{path}.ia3_l.{adapter}", layer.Vector(adapter), adapter);
    }

    /// <inheritdoc/>
    public long ExtraParameterCount => modulesToSave.Values.Sum(m => m.CopySize * m.Adapters.Count());

    /// <summary>
    /// Trainable and total parameter counts as PEFT's <c>get_nb_trainable_parameters</c>: the base model plus every
    /// (IA)³ vector (Σ over targets of out_features, or in_features for feed-forward targets, per adapter).
    /// </summary>
    public (long Trainable, long All) CountParameters()
    {
        long all = Model.parameters().Sum(Quantization.QuantizedModels.PeftParameterCount) + ExtraParameterCount;
        long train = Model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        return (train, all);
    }

    /// <summary>PEFT's <c>print_trainable_parameters</c> line.</summary>
    public string ParameterReport()
    {
        var (t, a) = CountParameters();
        return PeftModel.FormatReport(t, a);
    }

    /// <summary>While the returned scope lives, layers compute the base model only (PEFT's disable_adapter()).</summary>
    public IDisposable DisableAdapters()
    {
        SetDisabled(true);
        return new OnDispose(() => SetDisabled(false));
    }

    void SetDisabled(bool value)
    {
        foreach (var l in layers.Values) l.Disabled = value;
        foreach (var m in modulesToSave.Values)
        {
            string? adapter = value ? null : active.FirstOrDefault(n => m.Adapters.Contains(n));
            m.Activate(adapter, adapter is not null && trainable[adapter]);
        }
    }

    string? ITunerModel.MergeUnsupported => layers.Values.Any(l => l.Host.IsQuantized) ? "(IA)³ cannot be merged into a 4-bit base model" : null;

    void ITunerModel.Merge(IReadOnlyList<string>? adapters, bool safe) => Merge(adapters, safe);

    /// <summary>Folds the given (default: active) adapters into the base weights.</summary>
    public void Merge(IEnumerable<string>? adapters = null, bool safe = false)
    {
        var names = (adapters ?? active).ToList();
        foreach (var l in layers.Values) l.Merge(names, safe);
    }

    /// <inheritdoc/>
    public void Unmerge()
    {
        foreach (var l in layers.Values) l.Unmerge();
    }

    /// <summary>PEFT's merge_and_unload: merges the given (default: active) adapters and removes every (IA)³ layer.</summary>
    public CausalLM MergeAndUnload(bool safe = false, IEnumerable<string>? adapters = null)
    {
        Merge(adapters, safe);
        Unload();
        return Model;
    }

    void ITunerModel.Unload() => Unload();

    /// <summary>Removes every (IA)³ layer without merging (merged adapters stay folded in).</summary>
    public void Unload()
    {
        foreach (var l in layers.Values) l.Detach();
        layers.Clear();
        modulesToSave.Clear();
        configs.Clear();
        trainable.Clear();
        active = [];
        foreach (var p in Model.parameters()) p.requires_grad = false;
    }

    /// <inheritdoc/>
    public AdapterSummary Summary(string adapter)
    {
        int count = layers.Values.Count(l => l.Contains(adapter));
        long parameters = AdapterParameters().Where(p => p.Adapter == adapter).Sum(p => p.Param.numel());
        return new AdapterSummary("ia3", "-", count, parameters);
    }
}
