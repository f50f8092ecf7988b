using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Noah;

/// <summary>
/// A NOAH supernet on a model (docs/unipelt.md#noah): in every layer a LoRA, a bottleneck adapter and a deep prompt at
/// their largest sizes, of which the forward uses the <see cref="SubNet"/> set with <see cref="SetSubNet"/> (training
/// samples one per step; the search tries many). Parameter names: <c>{layer}.noah_lora_A.weight</c>,
/// <c>noah_lora_B</c>, <c>{mlp out layer}.noah_adapter_down</c>, <c>noah_adapter_up</c> and
/// <c>noah_prompt.{adapter}.weight</c>. One NOAH adapter per model; it cannot be merged (export a sub-network instead).
/// </summary>
public sealed class NoahModel : ITunerModel
{
    /// <summary>The model's child holding the prompt table.</summary>
    public const string PromptContainerName = "noah_prompt";

    static readonly NoahTuner TunerInstance = new();

    readonly Dictionary<string, SlicedLora> loras = new(StringComparer.Ordinal);
    readonly Dictionary<string, SlicedAdapter> adapters = new(StringComparer.Ordinal);
    AdapterContainer<PromptTable>? promptContainer;
    IDisposable? promptHandle;
    string? name;
    bool active, trainable, disabled;
    SubNet current;

    NoahModel(CausalLM model)
    {
        Model = model;
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <summary>A NOAH model on <paramref name="model"/> without a supernet yet (the base model is frozen).</summary>
    public static NoahModel Attach(CausalLM model) => new(model);

    /// <summary>A NOAH model with one new, active, trainable supernet.</summary>
    public static NoahModel Create(CausalLM model, NoahConfig config, long? seed = null, string adapter = AdapterFiles.DefaultAdapter)
    {
        var m = new NoahModel(model);
        m.AddAdapter(adapter, config, seed);
        m.SetAdapter([adapter]);
        return m;
    }

    /// <inheritdoc/>
    public ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    public CausalLM Model { get; }
    /// <summary>The supernet's config (null before one is added).</summary>
    public NoahConfig? Config { get; private set; }
    /// <inheritdoc/>
    public IReadOnlyList<string> Adapters => name is null ? [] : [name];
    /// <inheritdoc/>
    public IReadOnlyList<string> ActiveAdapters => name is not null && active ? [name] : [];
    /// <summary>The sub-network the forward uses.</summary>
    public SubNet Current => current;
    /// <summary>Module paths of the LoRA layers.</summary>
    public IReadOnlyCollection<string> LoraLayers => loras.Keys;
    /// <summary>Module paths of the adapter layers.</summary>
    public IReadOnlyCollection<string> AdapterLayers => adapters.Keys;

    string Check(string adapter) => adapter == name ? adapter : throw new PeftSharpException($"no NOAH supernet named \"{adapter}\"" + (name is null ? "" : $" (have: {name})"));

    /// <inheritdoc/>
    public PeftConfig ConfigOf(string adapter)
    {
        Check(adapter);
        return Config!;
    }

    void ITunerModel.AddAdapter(string adapter, PeftConfig config, long? seed, bool trainable) =>
        AddAdapter(adapter, config as NoahConfig ?? throw new PeftSharpException($"adapter \"{adapter}\": a {config.GetType().Name} is not a NOAH config"), seed, trainable);

    /// <summary>Adds the supernet (not active yet), at its largest sub-network.</summary>
    public void AddAdapter(string adapter, NoahConfig config, long? seed = null, bool trainable = true) =>
        AddAdapterCore(adapter, config, seed, trainable, $"adapter \"{adapter}\"");

    internal void AddAdapterCore(string adapter, NoahConfig config, long? seed, bool trainable, string source)
    {
        if (name is not null)
            throw new PeftSharpException($"adapter \"{adapter}\": this model already holds the NOAH supernet \"{name}\" (one per model)");
        config.Prepare(Model.Config, source);
        var loraTargets = new List<(string, Linear)>();
        var adapterTargets = new List<(string, Linear)>();
        string suffix = "." + config.AdapterModule!;
        foreach (var (path, layer) in Model.Extensions.TunableLayers().ToList())
        {
            bool lora = ModuleMatcher.Match(config.TargetModules!, null, null, path) == ModuleMatch.Targeted;
            bool adapterHere = path.EndsWith(suffix, StringComparison.Ordinal);
            if (!lora && !adapterHere) continue;
            if (layer is not Linear linear || linear.IsQuantized)
                throw new PeftSharpException($"{source}: layer '{path}' is not a full-precision Linear layer; NOAH needs one");
            if (lora) loraTargets.Add((path, linear));
            if (adapterHere) adapterTargets.Add((path, linear));
        }
        if (loraTargets.Count == 0)
            throw new PeftSharpException($"{source}: field 'target_modules' matches no Linear layer of this {Model.Config.ModelType} model");
        if (adapterTargets.Count != Model.Config.Layers)
            throw new PeftSharpException($"{source}: field 'adapter_module' \"{config.AdapterModule}\" matches {adapterTargets.Count} layers; expected one per decoder layer ({Model.Config.Layers})");

        var largest = config.Largest;
        using var gen = new Generator((ulong)(seed ?? 0), Model.Device.type == DeviceType.CUDA ? Model.Device : CPU);
        foreach (var (path, linear) in loraTargets) loras[path] = new SlicedLora(linear, largest.Rank, config.LoraAlpha, gen);
        foreach (var (path, linear) in adapterTargets) adapters[path] = new SlicedAdapter(linear, largest.AdapterDim, gen);
        var table = new PromptTable(largest.PromptLength, config.NumLayers!.Value * 2L * config.TokenDim!.Value, gen, Model.Device);
        var existing = Model.named_children().FirstOrDefault(c => c.name == PromptContainerName).module;
        if (existing is AdapterContainer<PromptTable> shared) promptContainer = shared;
        else
        {
            promptContainer = new AdapterContainer<PromptTable>(PromptContainerName);
            Model.register_module(PromptContainerName, promptContainer);
        }
        promptContainer.Add(adapter, table);
        name = adapter;
        Config = config;
        this.trainable = trainable;
        current = largest;
        Refresh();
    }

    /// <summary>Makes the forward use <paramref name="subnet"/> (sizes from the config's lists).</summary>
    /// <exception cref="PeftSharpException">A size not in the config's lists.</exception>
    public void SetSubNet(SubNet subnet)
    {
        var c = Config ?? throw new PeftSharpException("no NOAH supernet");
        if (!c.Allows(subnet))
            throw new PeftSharpException($"sub-network {subnet} is not in the supernet's choices (lora_ranks [{string.Join(", ", c.LoraRanks)}], adapter_dims [{string.Join(", ", c.AdapterDims)}], prompt_lengths [{string.Join(", ", c.PromptLengths)}])");
        current = subnet;
        Refresh();
    }

    /// <summary>
    /// Trainable parameters of a sub-network: what its exported adapters hold (LoRA r·(in + out) per target, adapter
    /// 2·d·hidden per layer, prompt p·num_layers·2·token_dim).
    /// </summary>
    public long ParameterCount(SubNet s)
    {
        long lora = loras.Values.Sum(l => (long)s.Rank * (l.Host.InFeatures + l.Host.OutFeatures));
        long adapter = adapters.Values.Sum(a => 2L * s.AdapterDim * a.Host.OutFeatures);
        long prompt = (long)s.PromptLength * Config!.NumLayers!.Value * 2 * Config.TokenDim!.Value;
        return lora + adapter + prompt;
    }

    /// <summary>Every supernet parameter by its model parameter name.</summary>
    public IEnumerable<(string Name, Parameter Param)> NamedParameters()
    {
        if (name is null) yield break;
        foreach (var (path, l) in loras)
            foreach (var (n, p) in l.Parameters()) yield return ($"{path}.{n}", p);
        foreach (var (path, a) in adapters)
            foreach (var (n, p) in a.Parameters()) yield return ($"{path}.{n}", p);
        yield return ($"{PromptContainerName}.{name}.weight", promptContainer![name].weight);
    }

    internal IReadOnlyDictionary<string, SlicedLora> LoraParts => loras;
    internal IReadOnlyDictionary<string, SlicedAdapter> AdapterParts => adapters;
    /// <summary>The prompt table [p_max, num_layers·2·token_dim].</summary>
    public Parameter PromptTable => name is null ? throw new PeftSharpException("no NOAH supernet") : promptContainer![name].weight;

    /// <inheritdoc/>
    public void LoadAdapter(string dir, string adapter, bool trainable = false) => NoahFiles.LoadAdapter(this, dir, adapter, trainable);

    /// <inheritdoc/>
    public string SaveAdapter(string dir, string adapter, string? baseModelNameOrPath = null)
    {
        Check(adapter);
        string folder = AdapterFiles.FolderFor(dir, adapter);
        NoahFiles.Save(this, folder, baseModelNameOrPath);
        return folder;
    }

    /// <inheritdoc/>
    public void SetAdapter(IReadOnlyList<string> names)
    {
        foreach (var n in names) Check(n);
        active = names.Count > 0;
        Refresh();
    }

    /// <inheritdoc/>
    public void SetTrainable(string adapter, bool value)
    {
        Check(adapter);
        trainable = value;
        Refresh();
    }

    void Refresh()
    {
        bool on = name is not null && active && !disabled;
        foreach (var l in loras.Values) { l.Enabled = on; l.Rank = current.Rank; }
        foreach (var a in adapters.Values) { a.Enabled = on; a.Dim = current.AdapterDim; }
        promptHandle?.Dispose();
        promptHandle = null;
        if (on && current.PromptLength > 0)
            promptHandle = Model.Extensions.AddKvPrefix(new SlicedPrompt(promptContainer![name!], Config!.NumLayers!.Value, Config.NumAttentionHeads!.Value, Config.TokenDim!.Value, current.PromptLength));
        foreach (var (_, p) in NamedParameters()) p.requires_grad = active && trainable;
    }

    /// <inheritdoc/>
    public void DeleteAdapter(string adapter)
    {
        Check(adapter);
        Unload();
    }

    /// <inheritdoc/>
    public IDisposable DisableAdapters()
    {
        bool before = disabled;
        disabled = true;
        Refresh();
        return new OnDispose(() =>
        {
            disabled = before;
            Refresh();
        });
    }

    /// <summary>Why a NOAH supernet cannot be merged: export a sub-network as ordinary adapters instead.</summary>
    public string? MergeUnsupported => "a NOAH supernet cannot be merged (it holds prompts and adapters; export a sub-network with noah-search and merge its LoRA folder)";

    /// <summary>Always throws: see <see cref="MergeUnsupported"/>.</summary>
    /// <exception cref="PeftSharpException">Always.</exception>
    public void Merge(IReadOnlyList<string>? adapters = null, bool safe = false) => throw new PeftSharpException(MergeUnsupported!);

    /// <summary>Does nothing: nothing is ever merged.</summary>
    public void Unmerge() { }

    /// <inheritdoc/>
    public void Unload()
    {
        promptHandle?.Dispose();
        promptHandle = null;
        foreach (var l in loras.Values) l.Detach();
        foreach (var a in adapters.Values) a.Detach();
        loras.Clear();
        adapters.Clear();
        if (name is not null) promptContainer?.Remove(name);
        name = null;
        Config = null;
        active = false;
    }

    /// <inheritdoc/>
    public IEnumerable<(string Name, Parameter Param, string Adapter)> AdapterParameters() =>
        name is null ? [] : NamedParameters().Select(p => (p.Name, p.Param, name)).ToList();

    /// <inheritdoc/>
    public long ExtraParameterCount => 0;

    /// <inheritdoc/>
    public AdapterSummary Summary(string adapter)
    {
        Check(adapter);
        return new AdapterSummary("noah", $"max {Config!.Largest}".Replace(' ', '_'), Config.NumLayers!.Value, NamedParameters().Sum(p => p.Param.numel()));
    }
}

/// <summary>NOAH in the tuner registry (<c>peft_type: "NOAH"</c>, a PeftSharp format).</summary>
public sealed class NoahTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => NoahConfig.PeftTypeName;
    /// <inheritdoc/>
    public string Name => "NOAH";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => NoahConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => NoahModel.Attach(model);
}
