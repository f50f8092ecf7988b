using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// LLM-Adapters' <c>BottleneckModel</c>: wraps every target Linear layer with a <see cref="LinearBottleneck"/> (extension
/// point 1), freezes the base model and trains only the adapters (plus biases when <c>bias</c> says so). The fork's
/// format has no adapter name in its keys, so a model holds one BOTTLENECK adapter at a time.
/// </summary>
public sealed partial class BottleneckModel
{
    readonly Dictionary<string, LinearBottleneck> layers = new(StringComparer.Ordinal);
    string? name;
    bool active, trainable, disabled;

    BottleneckModel(CausalLM model)
    {
        Model = model;
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <inheritdoc/>
    public CausalLM Model { get; }
    /// <summary>The adapter's config (null before one is added).</summary>
    public BottleneckConfig? Config { get; private set; }
    /// <summary>The adapter's name (null before one is added).</summary>
    public string? AdapterName => name;
    /// <summary>Adapted layers by module path (e.g. <c>model.layers.0.mlp.down_proj</c>).</summary>
    public IReadOnlyDictionary<string, LinearBottleneck> Layers => layers;

    /// <summary>A bottleneck model on <paramref name="model"/> with no adapter yet (the base model is frozen).</summary>
    public static BottleneckModel Attach(CausalLM model) => new(model);

    /// <summary>The fork's <c>get_peft_model</c> for a BOTTLENECK config: one active, trainable adapter.</summary>
    public static BottleneckModel Create(CausalLM model, BottleneckConfig config, long? seed = null, string adapterName = AdapterFiles.DefaultAdapter)
    {
        var result = new BottleneckModel(model);
        result.AddAdapter(adapterName, config, seed, trainable: true);
        result.SetActive(true);
        return result;
    }

    /// <summary>
    /// Adds the adapter (inactive until <see cref="SetActive"/>): fills the default target_modules for the model type and
    /// wraps each matching Linear layer.
    /// </summary>
    public void AddAdapter(string adapterName, BottleneckConfig config, long? seed = null, bool trainable = true)
    {
        string where = "bottleneck config";
        if (name is not null)
            throw new PeftSharpException($"adapter \"{adapterName}\": this model already holds the bottleneck adapter \"{name}\" (LLM-Adapters' format has one adapter per model)");
        if (config.ModulesToSave is { Count: > 0 })
            throw new PeftSharpException($"{where}: modules_to_save is not supported for bottleneck adapters");
        string? modelType = Model.Config.ModelType;
        config.TargetModules ??= (modelType is null ? null : BottleneckDefaults.TargetModulesFor(modelType, config.UseParallelAdapter, config.UseAdapterP)) is { } names
            ? TargetModules.FromNames(names)
            : throw new PeftSharpException($"{where}: target_modules: no LLM-Adapters default for model_type \"{modelType ?? "(none)"}\"; give target_modules");
        using var generator = seed is null ? null : new Generator((ulong)seed.Value, Model.Device);
        // Every target and its placement first, so that a bad target leaves the model untouched.
        var targets = new List<(string Path, Linear Layer, LinearAdapterPlacement Placement)>();
        foreach (var (path, layer) in Model.Extensions.TunableLayers().ToList())
        {
            if (!IsTarget(config.TargetModules, path)) continue;
            if (layer is not Linear linear)
                throw new PeftSharpException($"{where}: target_modules matches '{path}', which is not a Linear layer");
            if (linear.IsQuantized)
                throw new PeftSharpException($"{where}: layer '{path}' is held in 4 bits; bottleneck adapters need a full-precision base");
            string leaf = path[(path.LastIndexOf('.') + 1)..];
            targets.Add((path, linear, BottleneckDefaults.PlacementFor(modelType, leaf, config.UseParallelAdapter, where)));
        }
        if (targets.Count == 0)
            throw new PeftSharpException($"{where}: target modules {Describe(config.TargetModules)} not found in the base model");
        foreach (var (path, linear, placement) in targets) layers[path] = new LinearBottleneck(linear, placement, config, generator);
        name = adapterName;
        Config = config;
        this.trainable = trainable;
        Refresh();
    }

    /// <summary>The fork's test: a regex full match on the module path, or a path that ends with a list entry (a plain string suffix).</summary>
    public static bool IsTarget(TargetModules targets, string path)
    {
        if (path.Length == 0) return false;
        if (targets.Regex is { } regex) return PyRegex.FullMatch(regex, path);
        return targets.Names!.Any(n => path.EndsWith(n, StringComparison.Ordinal));
    }

    static string Describe(TargetModules t) => t.Regex is { } r ? $"\"{r}\"" : "[" + string.Join(", ", t.Names!.Select(n => $"'{n}'")) + "]";

    /// <summary>Makes the adapter act (or not); it trains while active and trainable.</summary>
    public void SetActive(bool value)
    {
        active = value;
        Refresh();
    }

    /// <summary>Turns the adapters on or off without changing which is active (the fork's enable/disable_adapter_layers).</summary>
    public void SetEnabled(bool enabled)
    {
        disabled = !enabled;
        Refresh();
    }

    /// <summary>Marks the adapter parameters (and the biases named by <c>bias</c>) trainable or frozen.</summary>
    public void SetTrainable(bool value)
    {
        trainable = value;
        Refresh();
    }

    void Refresh()
    {
        foreach (var l in layers.Values) l.Enabled = active && !disabled;
        bool grad = active && trainable;
        foreach (var (_, p) in TrainableParameters()) p.requires_grad = grad;
    }

    /// <summary>
    /// What the fork trains and saves, by Hugging Face parameter name: every adapter parameter, plus every bias
    /// (<c>bias: "all"</c>) or the wrapped layers' biases (<c>"adapter_only"</c>).
    /// </summary>
    public IEnumerable<(string Name, Parameter Param)> TrainableParameters()
    {
        foreach (var (path, layer) in layers)
            foreach (var (n, p) in layer.Parameters()) yield return ($"{path}.{n}", p);
        if (Config?.Bias == "all")
        {
            foreach (var (n, p) in Model.named_parameters())
                if (n.Contains("bias", StringComparison.Ordinal) && !n.Contains("adapter_", StringComparison.Ordinal)) yield return (n, p);
        }
        else if (Config?.Bias == "adapter_only")
        {
            foreach (var (path, layer) in layers)
                if (layer.Host.bias is { } b) yield return ($"{path}.bias", b);
        }
    }

    /// <summary>Number of trainable parameters (what the fork's <c>print_trainable_parameters</c> counts).</summary>
    public long TrainableParameterCount => TrainableParameters().Sum(t => t.Param.numel());

    /// <summary>Removes the adapter from every layer.</summary>
    public void Unload()
    {
        foreach (var layer in layers.Values) layer.Detach();
        layers.Clear();
        name = null;
        Config = null;
        active = false;
    }
}
