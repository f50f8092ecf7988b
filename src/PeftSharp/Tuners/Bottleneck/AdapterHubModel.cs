using PeftSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// AdapterHub-style bottleneck adapters (Houlsby, Pfeiffer, parallel) on a <see cref="CausalLM"/>: one
/// <see cref="SubLayerAdapters"/> per decoder block and location, holding adapters by name. The base model is frozen;
/// the active adapter's parameters train.
/// </summary>
public sealed partial class AdapterHubModel
{
    readonly Dictionary<string, AdapterHubConfig> configs = new(StringComparer.Ordinal);
    readonly Dictionary<(int Layer, SubLayerKind Location), SubLayerAdapters> locations = new();
    readonly List<IDisposable> hooks = [];
    readonly Dictionary<string, bool> trainableFlags = new(StringComparer.Ordinal);

    AdapterHubModel(CausalLM model)
    {
        Model = model;
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <inheritdoc/>
    public CausalLM Model { get; }
    /// <summary>Adapter configs by name.</summary>
    public IReadOnlyDictionary<string, AdapterHubConfig> Configs => configs;
    /// <summary>The adapter that runs (AdapterHub's <c>set_active_adapters</c> with one name), or null.</summary>
    public string? Active { get; private set; }
    /// <summary>The adapter holders by (block index, sub-layer).</summary>
    public IReadOnlyDictionary<(int Layer, SubLayerKind Location), SubLayerAdapters> Locations => locations;

    /// <summary>The module path of decoder block <paramref name="layer"/> (<c>transformer.h.3</c>, <c>model.layers.3</c>).</summary>
    public static string BlockPath(CausalLM model, int layer) => model.Config.IsGpt2 ? $"transformer.h.{layer}" : $"model.layers.{layer}";

    // One per model, as AdapterHub keeps one set of adapter layers per model: adapters of several configs live side by side.
    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<CausalLM, AdapterHubModel> PerModel = new();

    /// <summary>The model's AdapterHub-style adapters (created, with the base frozen, on first use).</summary>
    public static AdapterHubModel For(CausalLM model) => PerModel.GetValue(model, m => new AdapterHubModel(m));

    /// <summary>AdapterHub's <c>add_adapter(name, config)</c> + <c>train_adapter(name)</c>: adds a trainable, active adapter.</summary>
    public static AdapterHubModel Create(CausalLM model, AdapterHubConfig config, string name, long? seed = null)
    {
        var hub = For(model);
        hub.AddAdapter(name, config, seed);
        hub.SetActive(name, trainable: true);
        return hub;
    }

    /// <summary>Adds an adapter (inactive) at every location its config names, in every layer not left out; it trains
    /// while active when <paramref name="trainable"/>.</summary>
    public void AddAdapter(string name, AdapterHubConfig config, long? seed = null, bool trainable = true)
    {
        if (configs.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists");
        trainableFlags[name] = trainable;
        if (name.Length == 0 || name.Contains('.')) throw new PeftSharpException($"adapter name \"{name}\" must be non-empty and contain no '.'");
        configs[name] = config;
        int hidden = Model.Config.Hidden;
        using var gen = seed is null ? null : new Generator((ulong)seed.Value, Model.Device);
        var leaveOut = config.LeaveOut.ToHashSet();
        for (int layer = 0; layer < Model.Config.Layers; layer++)
        {
            if (leaveOut.Contains(layer)) continue;
            foreach (var location in new[] { SubLayerKind.Attention, SubLayerKind.Mlp })
            {
                if (location == SubLayerKind.Attention ? !config.MhAdapter : !config.OutputAdapter) continue;
                var adapter = new SubLayerBottleneck(config, hidden, config.BottleneckSize(hidden, layer), Model.Device, gen);
                foreach (var p in adapter.parameters()) p.requires_grad = false;
                LocationAt(layer, location).adapters.Add(name, adapter);
            }
        }
    }

    internal SubLayerAdapters LocationAt(int layer, SubLayerKind location)
    {
        if (locations.TryGetValue((layer, location), out var existing)) return existing;
        var created = new SubLayerAdapters(location);
        Model.Blocks[layer].AddModule(SubLayerAdapters.ModuleName(location), created);
        hooks.Add(Model.Extensions.AddSubLayerHook(layer, location, created));
        locations[(layer, location)] = created;
        return created;
    }

    /// <summary>Makes <paramref name="name"/> the adapter that runs (null: none); it trains when it was added trainable.</summary>
    public void SetActive(string? name) => SetActive(name, name is not null && trainableFlags.GetValueOrDefault(name));

    /// <summary>Makes <paramref name="name"/> the adapter that runs (null: none), and sets whether its parameters train.</summary>
    public void SetActive(string? name, bool trainable)
    {
        if (name is not null && configs.ContainsKey(name)) trainableFlags[name] = trainable;
        if (name is not null && !configs.ContainsKey(name)) throw new PeftSharpException($"no adapter named \"{name}\"");
        Active = name;
        foreach (var loc in locations.Values) loc.Active = name;
        foreach (var n in configs.Keys)
            foreach (var (_, p) in ParametersOf(n)) p.requires_grad = trainable && n == name;
    }

    /// <summary>An adapter's parameters by model parameter name (<c>transformer.h.0.output_adapters.adapters.{name}.adapter_up.weight</c>).</summary>
    public IEnumerable<(string Name, Parameter Param)> ParametersOf(string name)
    {
        foreach (var ((layer, location), loc) in locations.OrderBy(kv => kv.Key.Layer).ThenBy(kv => kv.Key.Location))
        {
            if (!loc.adapters.Contains(name)) continue;
            string prefix = $"{BlockPath(Model, layer)}.{SubLayerAdapters.ModuleName(location)}.adapters.{name}.";
            foreach (var (pn, p) in loc.adapters[name].named_parameters()) yield return (prefix + pn, p);
        }
    }

    /// <summary>Number of parameters of one adapter.</summary>
    public long ParameterCount(string name) => ParametersOf(name).Sum(t => t.Param.numel());

    /// <summary>Removes one adapter from every location.</summary>
    public void DeleteAdapter(string name)
    {
        if (!configs.Remove(name)) throw new PeftSharpException($"no adapter named \"{name}\"");
        trainableFlags.Remove(name);
        foreach (var loc in locations.Values) loc.adapters.Remove(name);
        if (Active == name) SetActive(null);
    }

    /// <summary>Runs the base model alone until the returned handle is disposed (AdapterHub's <c>set_active_adapters(None)</c>).</summary>
    public IDisposable Disable()
    {
        string? active = Active;
        foreach (var loc in locations.Values) loc.Active = null;
        return new OnDispose(() => { foreach (var loc in locations.Values) loc.Active = active; });
    }

    /// <summary>Detaches every adapter from the model (hooks and modules), leaving the base model as it was.</summary>
    public void Unload()
    {
        foreach (var h in hooks) h.Dispose();
        hooks.Clear();
        foreach (var ((layer, location), loc) in locations)
        {
            Model.Blocks[layer].RemoveModule(SubLayerAdapters.ModuleName(location));
            loc.Dispose();
        }
        locations.Clear();
        configs.Clear();
        trainableFlags.Clear();
        Active = null;
        PerModel.Remove(Model);
    }
}
