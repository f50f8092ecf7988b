using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SideTuning;

/// <summary>
/// The side-network adapters of one method (LST or side tuning) on a model: one <see cref="SideNetwork"/> per adapter,
/// registered under the model as <c>side_network.{adapter}</c> so training finds its parameters; the backbone is
/// frozen. One adapter is active at a time; it acts through extension point 5. Side networks cannot be merged.
/// </summary>
public sealed class SideTuningModel : ITunerModel
{
    /// <summary>The model's child holding every side network (shared by LST and side tuning).</summary>
    public const string ContainerName = "side_network";

    readonly Dictionary<string, SideNetworkConfig> configs = new(StringComparer.Ordinal);
    readonly Dictionary<string, bool> trainable = new(StringComparer.Ordinal);
    readonly AdapterContainer<SideNetwork> container;
    string[] active = [];
    IDisposable? registration;
    int disabled;

    /// <summary>A tuner model for <paramref name="tuner"/>'s method on <paramref name="model"/>, with all base parameters frozen.</summary>
    public SideTuningModel(CausalLM model, ITuner tuner)
    {
        Model = model;
        Tuner = tuner;
        foreach (var p in model.parameters()) p.requires_grad = false;
        var existing = model.named_children().FirstOrDefault(c => c.name == ContainerName).module;
        if (existing is AdapterContainer<SideNetwork> shared) container = shared;
        else
        {
            container = new AdapterContainer<SideNetwork>(ContainerName);
            model.register_module(ContainerName, container);
        }
    }

    /// <summary>PEFT-style get_peft_model: <paramref name="model"/> with one new, active, trainable adapter.</summary>
    public static SideTuningModel Create(CausalLM model, SideNetworkConfig config, string adapter = AdapterFiles.DefaultAdapter, long? seed = null)
    {
        ITuner tuner = config is LstConfig ? new LstTuner() : new SideTuningTuner();
        var m = new SideTuningModel(model, tuner);
        m.AddAdapter(adapter, config, seed);
        m.SetAdapter([adapter]);
        return m;
    }

    /// <inheritdoc/>
    public ITuner Tuner { get; }
    /// <inheritdoc/>
    public CausalLM Model { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string> Adapters => [.. configs.Keys];
    /// <inheritdoc/>
    public IReadOnlyList<string> ActiveAdapters => active;
    /// <inheritdoc/>
    public PeftConfig ConfigOf(string adapter) => Config(adapter);

    SideNetworkConfig Config(string adapter) =>
        configs.TryGetValue(adapter, out var c) ? c : throw new PeftSharpException($"no adapter named \"{adapter}\" (have: {string.Join(", ", configs.Keys)})");

    /// <summary>The side network of one adapter.</summary>
    public SideNetwork Network(string adapter)
    {
        Config(adapter);
        return container[adapter];
    }

    /// <inheritdoc/>
    public void AddAdapter(string name, PeftConfig config, long? seed = null, bool trainable = true) =>
        AddAdapterCore(name, config, seed, trainable, inference: false, source: $"adapter \"{name}\"");

    internal void AddAdapterCore(string name, PeftConfig config, long? seed, bool trainable, bool inference, string source)
    {
        if (config is not SideNetworkConfig side || config.PeftType != Tuner.PeftType)
            throw new PeftSharpException($"{source}: a {config.GetType().Name} ({config.PeftType}) is not a {Tuner.Name} config");
        if (configs.ContainsKey(name) || container.Contains(name)) throw new PeftSharpException($"adapter \"{name}\" already exists");
        try { side.Normalize(); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{source}: {e.Message}"); }
        side.CheckFits(Model.Config, source);
        // As PEFT: a config marked inference_mode (every saved one) builds the layout without initialising it.
        inference |= side.InferenceMode;
        using var gen = new Generator((ulong)(seed ?? 0), CPU);
        container.Add(name, new SideNetwork(Model, side, inference, gen));
        configs[name] = side;
        this.trainable[name] = trainable;
        UpdateRequiresGrad();
    }

    /// <inheritdoc/>
    public void LoadAdapter(string dir, string name, bool trainable = false) => SideTuningFiles.LoadAdapter(this, dir, name, trainable);

    /// <inheritdoc/>
    public string SaveAdapter(string dir, string name, string? baseModelNameOrPath = null) => SideTuningFiles.Save(this, dir, name, baseModelNameOrPath);

    /// <inheritdoc/>
    public void SetAdapter(IReadOnlyList<string> names)
    {
        foreach (var n in names) Config(n);
        if (names.Count > 1)
            throw new PeftSharpException($"{Tuner.Name}: one side network can be active at a time, got {string.Join(", ", names)}");
        active = [.. names];
        Reattach();
        UpdateRequiresGrad();
    }

    void Reattach()
    {
        registration?.Dispose();
        registration = null;
        if (active.Length == 1 && disabled == 0) registration = Model.Extensions.AddHiddenStateTap(new SideNetworkTap(container[active[0]]));
    }

    /// <inheritdoc/>
    public void SetTrainable(string name, bool value)
    {
        Config(name);
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
        Config(name);
        active = active.Where(a => a != name).ToArray();
        configs.Remove(name);
        trainable.Remove(name);
        Reattach();
        container.Remove(name);
    }

    /// <inheritdoc/>
    public IDisposable DisableAdapters()
    {
        disabled++;
        Reattach();
        return new OnDispose(() =>
        {
            disabled--;
            Reattach();
        });
    }

    /// <summary>Why side networks cannot be merged: they are a second network beside the backbone, not a weight update.</summary>
    public string? MergeUnsupported => $"{Tuner.Name} adapters are a side network beside the backbone and cannot be merged into the base weights";

    /// <summary>Always throws: side networks cannot be merged.</summary>
    /// <exception cref="PeftSharpException">Always.</exception>
    public void Merge(IReadOnlyList<string>? adapters = null, bool safe = false) => throw new PeftSharpException(MergeUnsupported!);

    /// <summary>Does nothing: nothing is ever merged.</summary>
    public void Unmerge() { }

    /// <inheritdoc/>
    public void Unload()
    {
        registration?.Dispose();
        registration = null;
        foreach (var name in configs.Keys.ToList()) container.Remove(name);
        configs.Clear();
        trainable.Clear();
        active = [];
        foreach (var p in Model.parameters()) p.requires_grad = false;
    }

    /// <summary>Every parameter of every adapter, named as in the model (<c>side_network.{adapter}.upsample.weight</c>).</summary>
    public IEnumerable<(string Name, Parameter Param, string Adapter)> AdapterParameters()
    {
        foreach (var adapter in configs.Keys.ToList())
            foreach (var (name, p) in container[adapter].named_parameters())
                yield return ($"{ContainerName}.{adapter}.{name}", p, adapter);
    }

    /// <inheritdoc/>
    public long ExtraParameterCount => 0;

    /// <inheritdoc/>
    public AdapterSummary Summary(string adapter)
    {
        var config = Config(adapter);
        long parameters = container[adapter].parameters().Sum(p => p.numel());
        return new AdapterSummary(config is LstConfig ? "lst" : "side_tuning", config.ReductionFactor.ToString(System.Globalization.CultureInfo.InvariantCulture),
            Model.Config.Layers, parameters);
    }
}
