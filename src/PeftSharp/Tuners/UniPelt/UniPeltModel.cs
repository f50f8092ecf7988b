using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.UniPelt;

/// <summary>
/// The UniPELT adapter on a model (docs/unipelt.md): gated LoRA on the target layers, a gated key/value prefix in
/// every layer and a gated bottleneck adapter on every MLP output projection, trained together. Parameter names in
/// the model: <c>{layer}.unipelt_lora_A.weight</c>, <c>unipelt_lora_B</c>, <c>unipelt_lora_gate</c>;
/// <c>{mlp out layer}.unipelt_adapter_down</c>, <c>unipelt_adapter_up</c>, <c>unipelt_adapter_gate</c>;
/// <c>{block}.unipelt_prefix_gate.weight/bias</c>; <c>unipelt_prefix.{adapter}.weight</c> (the prefix table). A model
/// holds one UniPELT adapter at a time; it cannot be merged (the gates depend on the input).
/// </summary>
public sealed class UniPeltModel : ITunerModel
{
    /// <summary>The model's child holding the prefix table.</summary>
    public const string PrefixContainerName = "unipelt_prefix";
    /// <summary>The module each block gets for its prefix gate.</summary>
    public const string PrefixGateName = "unipelt_prefix_gate";

    static readonly UniPeltTuner TunerInstance = new();

    readonly Dictionary<string, GatedLora> loras = new(StringComparer.Ordinal);
    readonly Dictionary<string, GatedAdapter> adapters = new(StringComparer.Ordinal);
    readonly List<TorchSharp.Modules.Linear> prefixGates = [];
    AdapterContainer<PrefixTable>? prefixContainer;
    GatedPrefix? prefix;
    IDisposable? prefixHandle, tapHandle;
    string? name;
    bool active, trainable, disabled;

    UniPeltModel(CausalLM model)
    {
        Model = model;
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <summary>A UniPELT model on <paramref name="model"/> without an adapter (the base model is frozen).</summary>
    public static UniPeltModel Attach(CausalLM model) => new(model);

    /// <summary>A UniPELT model with one new, active, trainable adapter.</summary>
    public static UniPeltModel Create(CausalLM model, UniPeltConfig config, long? seed = null, string adapter = AdapterFiles.DefaultAdapter)
    {
        var m = new UniPeltModel(model);
        m.AddAdapter(adapter, config, seed);
        m.SetAdapter([adapter]);
        return m;
    }

    /// <inheritdoc/>
    public ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    public CausalLM Model { get; }
    /// <summary>The adapter's config (null before one is added).</summary>
    public UniPeltConfig? Config { get; private set; }
    /// <inheritdoc/>
    public IReadOnlyList<string> Adapters => name is null ? [] : [name];
    /// <inheritdoc/>
    public IReadOnlyList<string> ActiveAdapters => name is not null && active ? [name] : [];
    /// <summary>Module paths of the layers holding the gated LoRA.</summary>
    public IReadOnlyCollection<string> LoraLayers => loras.Keys;
    /// <summary>Module paths of the layers holding the gated adapter.</summary>
    public IReadOnlyCollection<string> AdapterLayers => adapters.Keys;

    string Check(string adapter) => adapter == name ? adapter : throw new PeftSharpException($"no UniPELT adapter named \"{adapter}\"" + (name is null ? "" : $" (have: {name})"));

    /// <inheritdoc/>
    public PeftConfig ConfigOf(string adapter)
    {
        Check(adapter);
        return Config!;
    }

    void ITunerModel.AddAdapter(string adapter, PeftConfig config, long? seed, bool trainable) =>
        AddAdapter(adapter, config as UniPeltConfig ?? throw new PeftSharpException($"adapter \"{adapter}\": a {config.GetType().Name} is not a UNIPELT config"), seed, trainable);

    /// <summary>Adds the adapter (not active yet): gated LoRA on the targets, gated adapters on the MLP outputs, the gated prefix.</summary>
    public void AddAdapter(string adapter, UniPeltConfig config, long? seed = null, bool trainable = true) =>
        AddAdapterCore(adapter, config, seed, trainable, $"adapter \"{adapter}\"");

    internal void AddAdapterCore(string adapter, UniPeltConfig config, long? seed, bool trainable, string source)
    {
        if (name is not null)
            throw new PeftSharpException($"adapter \"{adapter}\": this model already holds the UniPELT adapter \"{name}\" (one UniPELT adapter per model)");
        config.Prepare(Model.Config, source);
        var loraTargets = new List<(string, Linear)>();
        var adapterTargets = new List<(string, Linear)>();
        string suffix = "." + config.AdapterModule!;
        foreach (var (path, layer) in Model.Extensions.TunableLayers().ToList())
        {
            bool lora = ModuleMatcher.Match(config.TargetModules!, null, null, path) == ModuleMatch.Targeted;
            bool adapterHere = path.EndsWith(suffix, StringComparison.Ordinal) || path == config.AdapterModule;
            if (!lora && !adapterHere) continue;
            if (layer is not Linear linear || linear.IsQuantized)
                throw new PeftSharpException($"{source}: layer '{path}' is not a full-precision Linear layer; UniPELT needs one");
            if (lora) loraTargets.Add((path, linear));
            if (adapterHere) adapterTargets.Add((path, linear));
        }
        if (loraTargets.Count == 0)
            throw new PeftSharpException($"{source}: field 'target_modules' matches no Linear layer of this {Model.Config.ModelType} model");
        if (adapterTargets.Count != Model.Config.Layers)
            throw new PeftSharpException($"{source}: field 'adapter_module' \"{config.AdapterModule}\" matches {adapterTargets.Count} layers; expected one per decoder layer ({Model.Config.Layers})");

        using var gen = new Generator((ulong)(seed ?? 0), Model.Device.type == DeviceType.CUDA ? Model.Device : CPU);
        foreach (var (path, linear) in loraTargets) loras[path] = new GatedLora(linear, config.R, config.Scaling, gen);
        foreach (var (path, linear) in adapterTargets) adapters[path] = new GatedAdapter(linear, config.BottleneckSize, config.NonLinearity, gen);
        int layers = config.NumLayers!.Value;
        var table = new PrefixTable(config.NumVirtualTokens, layers * 2L * config.TokenDim!.Value, gen, Model.Device);
        var existing = Model.named_children().FirstOrDefault(c => c.name == PrefixContainerName).module;
        if (existing is AdapterContainer<PrefixTable> shared) prefixContainer = shared;
        else
        {
            prefixContainer = new AdapterContainer<PrefixTable>(PrefixContainerName);
            Model.register_module(PrefixContainerName, prefixContainer);
        }
        prefixContainer.Add(adapter, table);
        foreach (var block in Model.Blocks)
        {
            var gate = Gate.Create(config.HiddenSize!.Value, gen, Model.Device);
            block.AddModule(PrefixGateName, gate);
            prefixGates.Add(gate);
        }
        prefix = new GatedPrefix(table, prefixGates, config.NumVirtualTokens, config.NumAttentionHeads!.Value, config.TokenDim!.Value);
        name = adapter;
        Config = config;
        this.trainable = trainable;
        Refresh();
    }

    /// <summary>The gate of each example in <paramref name="layer"/>'s prefix from the last forward that added the prefix, [B, 1].</summary>
    public Tensor? PrefixGate(int layer) => prefix?.GateOf(layer);

    /// <summary>
    /// The mean value of every gate over the forwards <paramref name="run"/> makes (e.g. over validation batches):
    /// what <see cref="UniPeltExport"/> can fold into the exported parts.
    /// </summary>
    public GateMeans MeasureGates(Action run)
    {
        if (name is null || prefix is null) throw new PeftSharpException("no UniPELT adapter");
        var loraMeters = loras.ToDictionary(kv => kv.Key, kv => kv.Value.Meter = new GateMeter());
        var adapterMeters = adapters.ToDictionary(kv => kv.Key, kv => kv.Value.Meter = new GateMeter());
        var prefixMeters = prefixGates.Select(_ => new GateMeter()).ToArray();
        prefix.Meters = prefixMeters;
        try { run(); }
        finally
        {
            foreach (var l in loras.Values) l.Meter = null;
            foreach (var a in adapters.Values) a.Meter = null;
            prefix.Meters = null;
        }
        static double Mean(GateMeter m, string what) => m.Mean ?? throw new PeftSharpException($"UniPELT gates: {what} saw no input while measuring (run at least one forward with the adapter active)");
        return new GateMeans(loraMeters.ToDictionary(kv => kv.Key, kv => Mean(kv.Value, kv.Key)),
            adapterMeters.ToDictionary(kv => kv.Key, kv => Mean(kv.Value, kv.Key)),
            prefixMeters.Select((m, i) => Mean(m, $"prefix of layer {i}")).ToList());
    }

    internal IReadOnlyDictionary<string, GatedLora> LoraParts => loras;
    internal IReadOnlyDictionary<string, GatedAdapter> AdapterParts => adapters;

    /// <summary>Every adapter parameter by its model parameter name.</summary>
    public IEnumerable<(string Name, Parameter Param)> NamedParameters()
    {
        if (name is null) yield break;
        foreach (var (path, l) in loras)
            foreach (var (n, p) in l.Parameters()) yield return ($"{path}.{n}", p);
        foreach (var (path, a) in adapters)
            foreach (var (n, p) in a.Parameters()) yield return ($"{path}.{n}", p);
        var blocks = Model.named_modules().Where(m => m.module is DecoderBlock).ToList();
        foreach (var (blockPath, module) in blocks)
        {
            var gate = prefixGates[((DecoderBlock)module).Index];
            yield return ($"{blockPath}.{PrefixGateName}.weight", gate.weight!);
            yield return ($"{blockPath}.{PrefixGateName}.bias", gate.bias!);
        }
        yield return ($"{PrefixContainerName}.{name}.weight", prefixContainer![name].weight);
    }

    /// <summary>The prefix table [P, num_layers·2·token_dim] (PEFT's prefix-tuning layout).</summary>
    public Parameter PrefixTable => name is null ? throw new PeftSharpException("no UniPELT adapter") : prefixContainer![name].weight;

    /// <inheritdoc/>
    public void LoadAdapter(string dir, string adapter, bool trainable = false) => UniPeltFiles.LoadAdapter(this, dir, adapter, trainable);

    /// <inheritdoc/>
    public string SaveAdapter(string dir, string adapter, string? baseModelNameOrPath = null)
    {
        Check(adapter);
        string folder = AdapterFiles.FolderFor(dir, adapter);
        UniPeltFiles.Save(this, folder, baseModelNameOrPath);
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
        foreach (var l in loras.Values) l.Enabled = on;
        foreach (var a in adapters.Values) a.Enabled = on;
        if (on && prefixHandle is null && prefix is not null)
        {
            tapHandle = Model.Extensions.AddHiddenStateTap(prefix);
            prefixHandle = Model.Extensions.AddKvPrefix(prefix);
        }
        else if (!on) ReleasePrefix();
        foreach (var (_, p) in NamedParameters()) p.requires_grad = active && trainable;
    }

    void ReleasePrefix()
    {
        prefixHandle?.Dispose();
        tapHandle?.Dispose();
        prefixHandle = tapHandle = null;
        prefix?.Dispose();
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

    /// <summary>Why UniPELT cannot be merged: its gates depend on each input.</summary>
    public string? MergeUnsupported => "UniPELT adapters cannot be merged (each part's gate depends on the input, and prefixes and bottleneck adapters are not weight updates)";

    /// <summary>Always throws: see <see cref="MergeUnsupported"/>.</summary>
    /// <exception cref="PeftSharpException">Always.</exception>
    public void Merge(IReadOnlyList<string>? adapters = null, bool safe = false) => throw new PeftSharpException(MergeUnsupported!);

    /// <summary>Does nothing: nothing is ever merged.</summary>
    public void Unmerge() { }

    /// <inheritdoc/>
    public void Unload()
    {
        ReleasePrefix();
        foreach (var l in loras.Values) l.Detach();
        foreach (var a in adapters.Values) a.Detach();
        loras.Clear();
        adapters.Clear();
        foreach (var block in Model.Blocks) block.RemoveModule(PrefixGateName);
        foreach (var g in prefixGates) g.Dispose();
        prefixGates.Clear();
        if (name is not null) prefixContainer?.Remove(name);
        prefix = null;
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
        var c = Config!;
        string size = FormattableString.Invariant($"r={c.R},p={c.NumVirtualTokens},d={c.BottleneckSize}");
        return new AdapterSummary("unipelt", size, c.NumLayers!.Value, NamedParameters().Sum(p => p.Param.numel()));
    }
}

/// <summary>UniPELT in the tuner registry (<c>peft_type: "UNIPELT"</c>, a PeftSharp format).</summary>
public sealed class UniPeltTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => UniPeltConfig.PeftTypeName;
    /// <inheritdoc/>
    public string Name => "UniPELT";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => UniPeltConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => UniPeltModel.Attach(model);
}
