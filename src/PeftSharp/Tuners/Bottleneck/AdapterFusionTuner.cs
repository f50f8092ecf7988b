using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp.Modules;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// AdapterFusion in the tuner registry. Its folders carry no <c>peft_type</c>; the registry recognises them by
/// adapter_fusion_config.json and files them under <see cref="RegistryKey"/>, which is not a PEFT peft_type.
/// </summary>
public sealed class AdapterFusionTuner : IForeignFormatTuner
{
    /// <summary>The registry key of AdapterFusion folders.</summary>
    public const string RegistryKey = "ADAPTERHUB_FUSION";
    /// <inheritdoc/>
    public string PeftType => RegistryKey;
    /// <inheritdoc/>
    public string Name => "AdapterFusion (AdapterHub)";
    /// <inheritdoc/>
    public bool Recognizes(string adapterDir) => AdapterFusionFiles.IsFusionFolder(adapterDir);

    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir)
    {
        var (adapters, config) = AdapterFusionFiles.ReadConfig(adapterDir);
        var fused = new Dictionary<string, AdapterHubConfig>(StringComparer.Ordinal);
        foreach (var a in adapters)
            if (AdapterHubFiles.IsAdapterHubFolder(Path.Combine(adapterDir, a))) fused[a] = AdapterHubFiles.ReadConfig(Path.Combine(adapterDir, a)).Config;
        return new AdapterFusionPeftConfig { Fusion = config, AdapterNames = adapters, AdapterConfigs = fused };
    }

    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => AdapterFusionModel.For(model);
}

/// <summary>
/// A fusion's config where the tuner framework expects a <see cref="PeftConfig"/>: the fusion fields and either the
/// folders of the adapters to fuse (loaded frozen when the fusion is added) or the names of adapters already loaded.
/// </summary>
public sealed class AdapterFusionPeftConfig : PeftConfig
{
    /// <summary>A config with the "dynamic" preset and no adapters yet.</summary>
    public AdapterFusionPeftConfig() : base(AdapterFusionTuner.RegistryKey) { }

    /// <inheritdoc/>
    [JsonIgnore] public override string ExpectedPeftType => AdapterFusionTuner.RegistryKey;
    /// <summary>The fusion layers' config.</summary>
    [JsonIgnore] public AdapterFusionConfig Fusion { get; init; } = AdapterFusionConfig.Dynamic();
    /// <summary>AdapterHub adapter folders to load and fuse (used when not empty).</summary>
    [JsonIgnore] public IReadOnlyList<string> AdapterDirs { get; init; } = [];
    /// <summary>Names of adapters already in the model to fuse (when no folders are given).</summary>
    [JsonIgnore] public IReadOnlyList<string> AdapterNames { get; init; } = [];
    /// <summary>Configs of fused adapters that are not loaded yet: added untrained (sizes only, e.g. for inspect) under these names.</summary>
    [JsonIgnore] public IReadOnlyDictionary<string, AdapterHubConfig> AdapterConfigs { get; init; } = new Dictionary<string, AdapterHubConfig>();
}

public sealed partial class AdapterFusionModel : ITunerModel
{
    static readonly AdapterFusionTuner TunerInstance = new();

    ITuner ITunerModel.Tuner => TunerInstance;
    IReadOnlyList<string> ITunerModel.Adapters => [.. fusions.Keys];
    IReadOnlyList<string> ITunerModel.ActiveAdapters => Active is null ? [] : [Active];

    PeftConfig ITunerModel.ConfigOf(string adapter) =>
        fusions.TryGetValue(adapter, out var f) ? new AdapterFusionPeftConfig { Fusion = f.Config, AdapterNames = f.Setup.Adapters }
        : throw new PeftSharpException($"no fusion named \"{adapter}\"");

    void ITunerModel.AddAdapter(string name, PeftConfig config, long? seed, bool trainable)
    {
        var c = config as AdapterFusionPeftConfig ?? throw new PeftSharpException($"adapter \"{name}\": a {config.GetType().Name} is not an AdapterFusion config");
        if (c.AdapterDirs.Count > 0) AddFusionOfFolders(name, c.Fusion, c.AdapterDirs, seed, trainable);
        else
        {
            var added = c.AdapterNames.Where(a => !Hub.Configs.ContainsKey(a) && c.AdapterConfigs.ContainsKey(a)).ToList();
            foreach (var a in added) Hub.AddAdapter(a, c.AdapterConfigs[a], seed, trainable: false);
            try { AddFusion(name, c.Fusion, c.AdapterNames, seed, trainable, owned: added); }
            catch
            {
                foreach (var a in added) Hub.DeleteAdapter(a);
                throw;
            }
        }
    }

    void ITunerModel.LoadAdapter(string dir, string name, bool trainable) => AdapterFusionFiles.Load(this, dir, name, trainable);

    string ITunerModel.SaveAdapter(string dir, string name, string? baseModelNameOrPath)
    {
        string folder = AdapterFiles.FolderFor(dir, name);
        AdapterFusionFiles.Save(this, folder, name, baseModelNameOrPath);
        return folder;
    }

    void ITunerModel.SetAdapter(IReadOnlyList<string> names)
    {
        if (names.Count > 1) throw new PeftSharpException($"fusions {string.Join(", ", names)}: one can be active at a time");
        SetActive(names.Count == 0 ? null : names[0]);
    }

    void ITunerModel.SetTrainable(string name, bool trainable)
    {
        if (!fusions.ContainsKey(name)) throw new PeftSharpException($"no fusion named \"{name}\"");
        trainableFlags[name] = trainable;
        SetActive(Active);
    }

    void ITunerModel.DeleteAdapter(string name) => DeleteFusion(name);
    IDisposable ITunerModel.DisableAdapters() => Disable();
    string? ITunerModel.MergeUnsupported => "AdapterFusion cannot be merged into the base weights (it mixes bottleneck adapters, which have a non-linearity)";
    void ITunerModel.Merge(IReadOnlyList<string>? adapters, bool safe) => throw new PeftSharpException(((ITunerModel)this).MergeUnsupported!);
    void ITunerModel.Unmerge() { }
    void ITunerModel.Unload() => Unload();

    IEnumerable<(string Name, Parameter Param, string Adapter)> ITunerModel.AdapterParameters() =>
        fusions.Keys.ToList().SelectMany(n => ParametersOf(n).Select(p => (p.Name, p.Param, n))
            .Concat(fusions[n].Setup.Adapters.SelectMany(a => Hub.ParametersOf(a)).Select(p => (p.Name, p.Param, n))));

    long ITunerModel.ExtraParameterCount => 0;

    AdapterSummary ITunerModel.Summary(string adapter)
    {
        if (!fusions.TryGetValue(adapter, out var f)) throw new PeftSharpException($"no fusion named \"{adapter}\"");
        return new AdapterSummary("fusion", f.Setup.Adapters.Count.ToString(System.Globalization.CultureInfo.InvariantCulture) + " adapters",
            LayersOf(adapter).Count(), ParametersOf(adapter).Sum(p => p.Param.numel()));
    }
}
