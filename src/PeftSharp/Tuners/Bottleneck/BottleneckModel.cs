using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// LLM-Adapters' <c>BottleneckModel</c>: wraps every target Linear layer with a <see cref="LinearBottleneck"/>,
/// freezes the base model and trains only the adapters (plus biases when <c>bias</c> says so). One adapter per model,
/// as in the fork.
/// </summary>
public sealed class BottleneckModel
{
    readonly Dictionary<string, LinearBottleneck> layers = new(StringComparer.Ordinal);

    BottleneckModel(CausalLM model, BottleneckConfig config)
    {
        Model = model;
        Config = config;
    }

    public CausalLM Model { get; }
    public BottleneckConfig Config { get; }
    /// <summary>Adapted layers by module path (e.g. <c>model.layers.0.mlp.down_proj</c>).</summary>
    public IReadOnlyDictionary<string, LinearBottleneck> Layers => layers;

    /// <summary>
    /// The fork's <c>get_peft_model</c> for a BOTTLENECK config: fills the default target_modules for the model type,
    /// wraps each matching Linear layer and freezes everything else.
    /// </summary>
    public static BottleneckModel Create(CausalLM model, BottleneckConfig config, long? seed = null)
    {
        string where = "bottleneck config";
        if (config.ModulesToSave is { Count: > 0 })
            throw new PeftSharpException($"{where}: modules_to_save is not supported for bottleneck adapters");
        string? modelType = model.Config.ModelType;
        config.TargetModules ??= (modelType is null ? null : BottleneckDefaults.TargetModulesFor(modelType, config.UseParallelAdapter, config.UseAdapterP)) is { } names
            ? TargetModules.FromNames(names)
            : throw new PeftSharpException($"{where}: target_modules: no LLM-Adapters default for model_type \"{modelType ?? "(none)"}\"; give target_modules");
        var result = new BottleneckModel(model, config);
        foreach (var p in model.parameters()) p.requires_grad = false;
        using var generator = seed is null ? null : new Generator((ulong)seed.Value, model.Device);
        var modules = model.named_modules().ToList();
        foreach (var (path, module) in modules)
        {
            if (!IsTarget(config.TargetModules, path)) continue;
            if (module is not Linear linear)
                throw new PeftSharpException($"{where}: target_modules matches '{path}', which is not a Linear layer");
            if (linear.Tuner is not null)
                throw new PeftSharpException($"{where}: layer '{path}' already carries another adapter");
            if (linear.IsQuantized)
                throw new PeftSharpException($"{where}: layer '{path}' is held in 4 bits; bottleneck adapters need a full-precision base");
            string name = path[(path.LastIndexOf('.') + 1)..];
            var placement = BottleneckDefaults.PlacementFor(modelType, name, config.UseParallelAdapter, where);
            result.layers[path] = new LinearBottleneck(linear, placement, config, generator);
        }
        if (result.layers.Count == 0)
            throw new PeftSharpException($"{where}: target modules {Describe(config.TargetModules)} not found in the base model");
        result.SetTrainable(true);
        return result;
    }

    /// <summary>The fork's test: a regex full match on the module path, or a path that ends with a list entry (a plain string suffix).</summary>
    public static bool IsTarget(TargetModules targets, string path)
    {
        if (path.Length == 0) return false;
        if (targets.Regex is { } regex) return PyRegex.FullMatch(regex, path);
        return targets.Names!.Any(n => path.EndsWith(n, StringComparison.Ordinal));
    }

    static string Describe(TargetModules t) => t.Regex is { } r ? $"\"{r}\"" : "[" + string.Join(", ", t.Names!.Select(n => $"'{n}'")) + "]";

    /// <summary>Turns the adapters on or off (the fork's enable/disable_adapter_layers).</summary>
    public void SetEnabled(bool enabled)
    {
        foreach (var l in layers.Values) l.Enabled = enabled;
    }

    /// <summary>Marks the adapter parameters (and the biases named by <c>bias</c>) trainable or frozen.</summary>
    public void SetTrainable(bool trainable)
    {
        foreach (var (_, p) in TrainableParameters()) p.requires_grad = trainable;
    }

    /// <summary>
    /// What the fork trains and saves, by Hugging Face parameter name: every adapter parameter, plus every bias
    /// (<c>bias: "all"</c>) or the wrapped layers' biases (<c>"adapter_only"</c>).
    /// </summary>
    public IEnumerable<(string Name, Parameter Param)> TrainableParameters()
    {
        foreach (var (path, layer) in layers)
            foreach (var (name, p) in layer.Parameters()) yield return ($"{path}.{name}", p);
        if (Config.Bias == "all")
        {
            foreach (var (name, p) in Model.named_parameters())
                if (name.Contains("bias", StringComparison.Ordinal) && !name.Contains("adapter_", StringComparison.Ordinal)) yield return (name, p);
        }
        else if (Config.Bias == "adapter_only")
        {
            foreach (var (path, layer) in layers)
                if (layer.Host.bias is { } b) yield return ($"{path}.bias", b);
        }
    }

    /// <summary>Number of trainable parameters (what the fork's <c>print_trainable_parameters</c> counts).</summary>
    public long TrainableParameterCount => TrainableParameters().Sum(t => t.Param.numel());
}
