using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Prompts;

/// <summary>
/// The soft-prompt adapters of one method on a model (what PEFT keeps in <c>PeftModel.prompt_encoder</c> for prompt
/// learning): one <see cref="PromptModule"/> per adapter, registered under the model as
/// <c>prompt_encoder.{adapter}</c> so training finds its parameters. As in PEFT, at most one prompt adapter is active
/// at a time; it acts through extension point 4 (virtual tokens) or 3 (key/value prefixes). Prompts cannot be merged.
/// </summary>
public abstract class PromptLearningModel<TConfig> : ITunerModel where TConfig : PromptLearningConfig
{
    /// <summary>The model's child holding every prompt adapter's module (shared by the three methods).</summary>
    public const string ContainerName = "prompt_encoder";

    /// <summary>PEFT's get_peft_model for the subclasses' Create: <paramref name="model"/> with one new, active adapter.</summary>
    protected static TModel WithAdapter<TModel>(TModel model, string adapter, TConfig config, long? seed) where TModel : PromptLearningModel<TConfig>
    {
        model.AddAdapter(adapter, config, seed);
        model.SetAdapter(adapter);
        return model;
    }

    readonly Dictionary<string, TConfig> configs = new(StringComparer.Ordinal);
    readonly Dictionary<string, bool> trainable = new(StringComparer.Ordinal);
    readonly AdapterContainer<PromptModule> container;
    string[] active = [];
    IDisposable? registration;
    int disabled;

    /// <summary>Wraps <paramref name="model"/> and freezes all its parameters.</summary>
    protected PromptLearningModel(CausalLM model)
    {
        Model = model;
        foreach (var p in model.parameters()) p.requires_grad = false;
        var existing = model.named_children().FirstOrDefault(c => c.name == ContainerName).module;
        if (existing is AdapterContainer<PromptModule> shared) container = shared;
        else
        {
            container = new AdapterContainer<PromptModule>();
            model.register_module(ContainerName, container);
        }
    }

    /// <inheritdoc/>
    public abstract ITuner Tuner { get; }
    /// <inheritdoc/>
    public CausalLM Model { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string> Adapters => [.. configs.Keys];
    /// <inheritdoc/>
    public IReadOnlyList<string> ActiveAdapters => active;
    /// <summary>Adapter configs by name.</summary>
    public IReadOnlyDictionary<string, TConfig> Configs => configs;
    /// <inheritdoc/>
    public PeftConfig ConfigOf(string adapter) => Config(adapter);

    TConfig Config(string adapter) =>
        configs.TryGetValue(adapter, out var c) ? c : throw new PeftSharpException($"no adapter named \"{adapter}\" (have: {string.Join(", ", configs.Keys)})");

    /// <summary>The module of one adapter (its <c>embedding</c> and, while training a reparameterised method, its encoder).</summary>
    public PromptModule Module(string adapter)
    {
        Config(adapter);
        return container[adapter];
    }

    /// <summary>The prompt of one adapter as PEFT saves it (<c>prompt_embeddings</c>), detached.</summary>
    public Tensor PromptEmbeddings(string adapter)
    {
        using var _ = no_grad();
        return Module(adapter).Output().detach().clone();
    }

    /// <summary>Builds an adapter's module: trained from scratch (<paramref name="inference"/> false) or holding a saved prompt.</summary>
    protected abstract PromptModule Create(string name, TConfig config, bool inference, Generator gen);

    /// <summary>Attaches the active adapter's module at its extension point.</summary>
    protected abstract IDisposable Register(PromptModule module, TConfig config);

    /// <summary>The method's name in inspect's table ("prompt_tuning").</summary>
    protected abstract string MethodName { get; }

    /// <summary>Decoder layers the adapter acts on (1 for virtual tokens, num_layers for prefixes).</summary>
    protected abstract int LayersOf(TConfig config);

    void ITunerModel.AddAdapter(string name, PeftConfig config, long? seed, bool trainable) =>
        AddAdapter(name, config as TConfig ?? throw new PeftSharpException($"adapter \"{name}\": a {config.GetType().Name} is not a {typeof(TConfig).Name}"), seed, trainable);

    /// <summary>PEFT's add_adapter for prompt learning: fills the model-size fields, builds the prompt (not active yet).</summary>
    public void AddAdapter(string name, TConfig config, long? seed = null, bool trainable = true) =>
        AddAdapterCore(name, config, seed, trainable, inference: false, source: $"adapter \"{name}\"");

    internal void AddAdapterCore(string name, TConfig config, long? seed, bool trainable, bool inference, string source)
    {
        if (configs.ContainsKey(name) || container.Contains(name)) throw new PeftSharpException($"adapter \"{name}\" already exists");
        config.Prepare(Model.Config, source);
        try { config.Normalize(); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{source}: {e.Message}"); }
        // As PEFT: a config marked inference_mode (every saved one) builds the inference layout, without init or encoder.
        inference |= config.InferenceMode;
        using var gen = new Generator((ulong)(seed ?? 0), Model.Device.type == DeviceType.CUDA ? Model.Device : CPU);
        var module = Create(name, config, inference, gen);
        container.Add(name, module);
        configs[name] = config;
        this.trainable[name] = trainable;
        UpdateRequiresGrad();
    }

    /// <inheritdoc/>
    public virtual void LoadAdapter(string dir, string name, bool trainable = false) => PromptFiles.LoadAdapter(this, dir, name, trainable);

    /// <inheritdoc/>
    public virtual string SaveAdapter(string dir, string name, string? baseModelNameOrPath = null) => PromptFiles.Save(this, dir, name, baseModelNameOrPath);

    void ITunerModel.SetAdapter(IReadOnlyList<string> names) => SetAdapter([.. names]);

    /// <summary>Makes this adapter (or none) the active one: PEFT's prompt learning runs one adapter at a time.</summary>
    public void SetAdapter(params string[] names)
    {
        foreach (var n in names) Config(n);
        if (names.Length > 1)
            throw new PeftSharpException($"{Tuner.Name}: one adapter can be active at a time (as PEFT's prompt learning), got {string.Join(", ", names)}");
        active = names;
        Reattach();
        UpdateRequiresGrad();
    }

    void Reattach()
    {
        registration?.Dispose();
        registration = null;
        if (active.Length == 1 && disabled == 0) registration = Register(container[active[0]], configs[active[0]]);
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
        var rest = active.Where(a => a != name).ToArray();
        configs.Remove(name);
        trainable.Remove(name);
        active = rest;
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

    /// <summary>
    /// Why prompt-learning adapters cannot be merged: they add virtual tokens or key/value prefixes, not weight updates.
    /// </summary>
    public string? MergeUnsupported => $"{Tuner.Name} adapters are soft prompts and cannot be merged into the base weights";

    /// <summary>Always throws: soft prompts cannot be merged into the base weights.</summary>
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

    /// <summary>Every parameter of every adapter, named as in the model (<c>prompt_encoder.{adapter}.embedding.weight</c>).</summary>
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
        return new AdapterSummary(MethodName, config.NumVirtualTokens!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture), LayersOf(config), parameters);
    }
}
