using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>
/// What the mixture tuner models share (PEFT's BaseTuner duties): adapters by name, each a list of
/// <see cref="IMixtureComponent"/>s; activation, trainability, disabling, unloading; saving and loading through a
/// per-method state dict; and the <see cref="RoutingLog"/> their routers write to. Mixtures cannot be merged: the
/// weights of the experts depend on each token.
/// </summary>
public abstract class MixtureTunerModel<TConfig> : IMixtureTunerModel where TConfig : PeftConfig
{
    readonly Dictionary<string, TConfig> configs = new(StringComparer.Ordinal);
    readonly Dictionary<string, List<IMixtureComponent>> components = new(StringComparer.Ordinal);
    readonly Dictionary<string, bool> trainable = new(StringComparer.Ordinal);
    string[] active = [];

    /// <summary>A tuner model on <paramref name="model"/> with no adapter yet; the base model is frozen.</summary>
    protected MixtureTunerModel(CausalLM model)
    {
        Model = model;
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <inheritdoc/>
    public abstract ITuner Tuner { get; }
    /// <inheritdoc/>
    public CausalLM Model { get; }
    /// <inheritdoc/>
    public RoutingLog Log { get; } = new();
    /// <summary>Adapter configs by name.</summary>
    public IReadOnlyDictionary<string, TConfig> Configs => configs;
    /// <inheritdoc/>
    public IReadOnlyList<string> Adapters => [.. configs.Keys];
    /// <inheritdoc/>
    public IReadOnlyList<string> ActiveAdapters => active;
    /// <summary>The pieces of adapter <paramref name="adapter"/> on the model.</summary>
    public IReadOnlyList<IMixtureComponent> ComponentsOf(string adapter) =>
        components.TryGetValue(adapter, out var list) ? list : throw new PeftSharpException($"no adapter named \"{adapter}\"");
    /// <inheritdoc/>
    public PeftConfig ConfigOf(string adapter) =>
        configs.TryGetValue(adapter, out var c) ? c : throw new PeftSharpException($"no adapter named \"{adapter}\"");

    /// <summary>The lower-case method name of inspect's table ("mixlora").</summary>
    protected abstract string MethodName { get; }
    /// <summary>How many adapters of this method may be active at once.</summary>
    protected virtual int MaxActive => int.MaxValue;
    /// <summary>Validates <paramref name="config"/>, fills its model-dependent defaults, and attaches its pieces.</summary>
    protected abstract List<IMixtureComponent> Build(string name, TConfig config, Generator? generator);
    /// <summary>The adapter's tensors by their key in the method's weights file (views of the live parameters).</summary>
    public abstract SortedDictionary<string, Tensor> StateDict(string adapter);
    /// <summary>Reads an adapter folder's config.</summary>
    protected abstract TConfig ReadConfig(string dir);
    /// <summary>The size column of inspect's table ("8×r8").</summary>
    protected abstract string SizeOf(TConfig config);

    void ITunerModel.AddAdapter(string name, PeftConfig config, long? seed, bool trainable) =>
        AddAdapter(name, config as TConfig ?? throw new PeftSharpException($"adapter \"{name}\": a {config.GetType().Name} is not a {Tuner.Name} config"), seed, trainable);

    /// <summary>Adds an adapter (inactive until <see cref="SetAdapter(string[])"/>).</summary>
    public void AddAdapter(string name, TConfig config, long? seed = null, bool trainable = true)
    {
        if (configs.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists");
        if (name.Length == 0 || name.Contains('.')) throw new PeftSharpException($"adapter name \"{name}\" must be non-empty and contain no '.'");
        using var gen = seed is long s ? new Generator((ulong)s) : null;
        var built = Build(name, config, gen);
        foreach (var c in built) c.Active = false;
        components[name] = built;
        configs[name] = config;
        this.trainable[name] = trainable;
        UpdateRequiresGrad();
    }

    /// <inheritdoc/>
    public void LoadAdapter(string dir, string name, bool trainable = false)
    {
        string weights = AdapterFiles.WeightsPath(dir);
        var config = ReadConfig(dir);
        AddAdapter(name, config, trainable: trainable);
        try
        {
            // The state dict holds views (one expert of a stacked tensor): read into copies, then write through.
            var live = StateDict(name);
            var staged = live.ToDictionary(kv => kv.Key, kv => empty_like(kv.Value), StringComparer.Ordinal);
            try
            {
                AdapterFiles.ReadTensors(weights, staged);
                using var _ = no_grad();
                foreach (var (key, value) in staged) live[key].copy_(value);
            }
            finally
            {
                foreach (var t in staged.Values) t.Dispose();
            }
        }
        catch
        {
            DeleteAdapter(name);
            throw;
        }
    }

    /// <inheritdoc/>
    public string SaveAdapter(string dir, string name, string? baseModelNameOrPath = null)
    {
        if (!configs.TryGetValue(name, out var config)) throw new PeftSharpException($"no adapter named \"{name}\"");
        string folder = AdapterFiles.FolderFor(dir, name);
        AdapterFiles.WriteFolder(folder, StateDict(name), config, baseModelNameOrPath);
        return folder;
    }

    void ITunerModel.SetAdapter(IReadOnlyList<string> names) => SetAdapter([.. names]);

    /// <summary>Makes exactly these adapters active; only they are trainable.</summary>
    public void SetAdapter(params string[] names)
    {
        foreach (var n in names)
            if (!configs.ContainsKey(n)) throw new PeftSharpException($"no adapter named \"{n}\" (have: {string.Join(", ", configs.Keys)})");
        if (names.Length > MaxActive)
            throw new PeftSharpException($"{Tuner.Name}: at most {MaxActive} adapter(s) can be active at once (asked for {string.Join(", ", names)})");
        active = names;
        foreach (var (adapter, list) in components)
            foreach (var c in list) c.Active = names.Contains(adapter);
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
        foreach (var c in components[name]) c.Detach();
        components.Remove(name);
        trainable.Remove(name);
        SetAdapter(active.Where(a => a != name).ToArray());
    }

    /// <inheritdoc/>
    public IDisposable DisableAdapters()
    {
        SetDisabled(true);
        return new OnDispose(() => SetDisabled(false));
    }

    void SetDisabled(bool value)
    {
        foreach (var list in components.Values)
            foreach (var c in list) c.Disabled = value;
    }

    /// <inheritdoc/>
    public string? MergeUnsupported => $"{Tuner.Name} adapters cannot be merged (the experts' weights depend on each token)";

    /// <inheritdoc/>
    public void Merge(IReadOnlyList<string>? adapters = null, bool safe = false) => throw new PeftSharpException(MergeUnsupported!);

    /// <inheritdoc/>
    public void Unmerge() { }

    /// <inheritdoc/>
    public void Unload()
    {
        foreach (var list in components.Values)
            foreach (var c in list) c.Detach();
        components.Clear();
        configs.Clear();
        trainable.Clear();
        active = [];
        Log.Clear();
        foreach (var p in Model.parameters()) p.requires_grad = false;
    }

    /// <inheritdoc/>
    public IEnumerable<(string Name, Parameter Param, string Adapter)> AdapterParameters()
    {
        foreach (var (adapter, list) in components.ToList())
            foreach (var c in list)
                foreach (var (name, p) in c.NamedParameters())
                    yield return (name, p, adapter);
    }

    /// <inheritdoc/>
    public long ExtraParameterCount => 0;

    /// <inheritdoc/>
    public AdapterSummary Summary(string adapter)
    {
        var config = (TConfig)ConfigOf(adapter);
        long parameters = AdapterParameters().Where(p => p.Adapter == adapter).Sum(p => p.Param.numel());
        return new AdapterSummary(MethodName, SizeOf(config), components[adapter].Count, parameters);
    }

    /// <summary>Trainable and total parameter counts as PEFT's get_nb_trainable_parameters.</summary>
    public (long Trainable, long All) CountParameters()
    {
        long all = Model.parameters().Sum(Quantization.QuantizedModels.PeftParameterCount);
        long train = Model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        return (train, all);
    }
}
