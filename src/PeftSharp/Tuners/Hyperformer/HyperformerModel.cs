using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Hyperformer;

/// <summary>
/// Hyperformer adapters on a model: one <see cref="Hypernetwork"/> per adapter, registered as
/// <c>hyperformer.{adapter}</c>, and while an adapter is active a serial hook after attention and after the MLP of every
/// block. One adapter is active at a time. The examples' task ids come from <see cref="ExtensionPoints.UseTaskIds"/>.
/// </summary>
public sealed class HyperformerModel : ITunerModel
{
    /// <summary>The model's child holding the hypernetworks.</summary>
    public const string ContainerName = "hyperformer";

    static readonly HyperformerTuner TunerInstance = new();
    readonly Dictionary<string, HyperformerConfig> configs = new(StringComparer.Ordinal);
    readonly Dictionary<string, bool> trainable = new(StringComparer.Ordinal);
    readonly AdapterContainer<Hypernetwork> container;
    readonly List<IDisposable> hooks = [];
    string[] active = [];
    int disabled;

    HyperformerModel(CausalLM model)
    {
        Model = model;
        foreach (var p in model.parameters()) p.requires_grad = false;
        container = new AdapterContainer<Hypernetwork>();
        model.register_module(ContainerName, container);
    }

    /// <summary>A Hyperformer model for <paramref name="model"/> without adapters yet.</summary>
    public static HyperformerModel Attach(CausalLM model) => new(model);

    /// <summary>One trainable, active Hyperformer adapter.</summary>
    public static HyperformerModel Create(CausalLM model, HyperformerConfig config, string adapter = AdapterFiles.DefaultAdapter, long? seed = null)
    {
        var h = new HyperformerModel(model);
        h.AddAdapter(adapter, config, seed);
        h.SetAdapter([adapter]);
        return h;
    }

    /// <inheritdoc/>
    public ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    public CausalLM Model { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string> Adapters => [.. configs.Keys];
    /// <inheritdoc/>
    public IReadOnlyList<string> ActiveAdapters => active;
    /// <inheritdoc/>
    public PeftConfig ConfigOf(string adapter) => Config(adapter);

    /// <summary>The config of one adapter.</summary>
    public HyperformerConfig Config(string adapter) =>
        configs.TryGetValue(adapter, out var c) ? c : throw new PeftSharpException($"no adapter named \"{adapter}\" (have: {string.Join(", ", configs.Keys)})");

    /// <summary>The hypernetwork of one adapter.</summary>
    public Hypernetwork Network(string adapter)
    {
        Config(adapter);
        return container[adapter];
    }

    void ITunerModel.AddAdapter(string name, PeftConfig config, long? seed, bool trainable) =>
        AddAdapter(name, config as HyperformerConfig ?? throw new PeftSharpException($"adapter \"{name}\": a {config.GetType().Name} is not a HyperformerConfig"), seed, trainable);

    /// <summary>Adds an adapter (not active yet): fills the model-size fields and builds its hypernetwork.</summary>
    public void AddAdapter(string name, HyperformerConfig config, long? seed = null, bool trainable = true)
    {
        if (configs.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists");
        config.Prepare(Model.Config, $"adapter \"{name}\"");
        using var gen = new Generator((ulong)(seed ?? 0), Model.Device.type == DeviceType.CUDA ? Model.Device : CPU);
        container.Add(name, new Hypernetwork(config, gen, Model.Device));
        configs[name] = config;
        this.trainable[name] = trainable;
        UpdateRequiresGrad();
    }

    /// <inheritdoc/>
    public void LoadAdapter(string dir, string name, bool trainable = false) => HyperformerFiles.LoadAdapter(this, dir, name, trainable);

    /// <inheritdoc/>
    public string SaveAdapter(string dir, string name, string? baseModelNameOrPath = null) => HyperformerFiles.Save(this, dir, name, baseModelNameOrPath);

    /// <inheritdoc/>
    public void SetAdapter(IReadOnlyList<string> names)
    {
        foreach (var n in names) Config(n);
        if (names.Count > 1) throw new PeftSharpException($"Hyperformer: one adapter can be active at a time, got {string.Join(", ", names)}");
        active = [.. names];
        Reattach();
        UpdateRequiresGrad();
    }

    void Reattach()
    {
        foreach (var h in hooks) h.Dispose();
        hooks.Clear();
        if (active.Length != 1 || disabled > 0) return;
        var network = container[active[0]];
        for (int layer = 0; layer < Model.Extensions.Layers; layer++)
            foreach (var kind in new[] { SubLayerKind.Attention, SubLayerKind.Mlp })
                hooks.Add(Model.Extensions.AddSubLayerHook(layer, kind, new HyperformerHook(network, Model.Extensions)));
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
        foreach (var (_, p, adapter) in AdapterParameters()) p.requires_grad = active.Contains(adapter) && trainable[adapter];
    }

    /// <inheritdoc/>
    public void DeleteAdapter(string name)
    {
        Config(name);
        configs.Remove(name);
        trainable.Remove(name);
        active = [.. active.Where(a => a != name)];
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

    /// <inheritdoc/>
    public string? MergeUnsupported => "Hyperformer adapters are bottleneck adapters generated per task and cannot be merged into the base weights (export one task with hyperformer-export)";

    /// <summary>Always throws: generated bottleneck adapters cannot be merged.</summary>
    /// <exception cref="PeftSharpException">Always.</exception>
    public void Merge(IReadOnlyList<string>? adapters = null, bool safe = false) => throw new PeftSharpException(MergeUnsupported!);

    /// <summary>Does nothing: nothing is ever merged.</summary>
    public void Unmerge() { }

    /// <inheritdoc/>
    public void Unload()
    {
        active = [];
        Reattach();
        foreach (var name in configs.Keys.ToList()) container.Remove(name);
        configs.Clear();
        trainable.Clear();
        foreach (var p in Model.parameters()) p.requires_grad = false;
    }

    /// <inheritdoc/>
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
        return new AdapterSummary("hyperformer", $"{config.NumTasks} tasks, d={config.BottleneckSize}", config.NumLayers!.Value, container[adapter].parameters().Sum(p => p.numel()));
    }
}

/// <summary>Hyperformer in the tuner registry (<c>peft_type: "HYPERFORMER"</c>, PeftSharp's own).</summary>
public sealed class HyperformerTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => HyperformerConfig.Type;
    /// <inheritdoc/>
    public string Name => "Hyperformer";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => HyperformerConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => HyperformerModel.Attach(model);
}
