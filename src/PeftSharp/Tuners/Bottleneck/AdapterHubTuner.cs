using System.Text.Json.Serialization;
using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp.Modules;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// AdapterHub's bottleneck adapters (Houlsby, Pfeiffer, parallel) in the tuner registry. Their folders carry no
/// <c>peft_type</c>; the registry recognises them by their adapter_config.json (a <c>"config"</c> object) and files them
/// under the registry key <see cref="RegistryKey"/>, which is not a PEFT peft_type.
/// </summary>
public sealed class AdapterHubTuner : IForeignFormatTuner
{
    /// <summary>The registry key of AdapterHub bottleneck adapters (not a PEFT peft_type).</summary>
    public const string RegistryKey = "ADAPTERHUB_BOTTLENECK";
    /// <inheritdoc/>
    public string PeftType => RegistryKey;
    /// <inheritdoc/>
    public string Name => "bottleneck adapters (AdapterHub)";
    /// <inheritdoc/>
    public bool Recognizes(string adapterDir) => AdapterHubFiles.IsAdapterHubFolder(adapterDir);

    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir)
    {
        var (name, config) = AdapterHubFiles.ReadConfig(adapterDir);
        return new AdapterHubPeftConfig { Hub = config, SavedName = name };
    }

    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => AdapterHubModel.For(model);
}

/// <summary>
/// An AdapterHub bottleneck config where the tuner framework expects a <see cref="PeftConfig"/>. It is never written as
/// a PEFT config: AdapterHub folders are written by <see cref="AdapterHubFiles"/>.
/// </summary>
public sealed class AdapterHubPeftConfig : PeftConfig
{
    /// <summary>An AdapterHub config holder with the Houlsby defaults.</summary>
    public AdapterHubPeftConfig() : base(AdapterHubTuner.RegistryKey) { }

    /// <inheritdoc/>
    [JsonIgnore] public override string ExpectedPeftType => AdapterHubTuner.RegistryKey;
    /// <summary>The AdapterHub config (AdapterHub's field names and defaults).</summary>
    [JsonIgnore] public AdapterHubConfig Hub { get; init; } = AdapterHubConfig.Houlsby();
    /// <summary>The adapter's name in the folder it was read from, if any.</summary>
    [JsonIgnore] public string? SavedName { get; init; }
}

public sealed partial class AdapterHubModel : ITunerModel
{
    static readonly AdapterHubTuner TunerInstance = new();

    ITuner ITunerModel.Tuner => TunerInstance;
    IReadOnlyList<string> ITunerModel.Adapters => [.. configs.Keys];
    IReadOnlyList<string> ITunerModel.ActiveAdapters => Active is null ? [] : [Active];

    PeftConfig ITunerModel.ConfigOf(string adapter) =>
        configs.TryGetValue(adapter, out var c) ? new AdapterHubPeftConfig { Hub = c, SavedName = adapter } : throw new PeftSharpException($"no adapter named \"{adapter}\"");

    void ITunerModel.AddAdapter(string name, PeftConfig config, long? seed, bool trainable) =>
        AddAdapter(name, (config as AdapterHubPeftConfig ?? throw new PeftSharpException($"adapter \"{name}\": a {config.GetType().Name} is not an AdapterHub bottleneck config")).Hub, seed, trainable);

    void ITunerModel.LoadAdapter(string dir, string name, bool trainable) => AdapterHubFiles.LoadAdapter(this, dir, name, trainable);

    string ITunerModel.SaveAdapter(string dir, string name, string? baseModelNameOrPath)
    {
        string folder = AdapterFiles.FolderFor(dir, name);
        AdapterHubFiles.Save(this, folder, name, baseModelNameOrPath);
        return folder;
    }

    void ITunerModel.SetAdapter(IReadOnlyList<string> names)
    {
        if (names.Count > 1)
            throw new PeftSharpException($"AdapterHub adapters {string.Join(", ", names)}: one can be active at a time (AdapterHub's Stack/Parallel compositions are not implemented)");
        SetActive(names.Count == 0 ? null : names[0]);
    }

    void ITunerModel.SetTrainable(string name, bool trainable)
    {
        if (!configs.ContainsKey(name)) throw new PeftSharpException($"no adapter named \"{name}\"");
        trainableFlags[name] = trainable;
        SetActive(Active);
    }

    void ITunerModel.DeleteAdapter(string name) => DeleteAdapter(name);
    IDisposable ITunerModel.DisableAdapters() => Disable();
    string? ITunerModel.MergeUnsupported => BottleneckTuner.CannotMerge;
    void ITunerModel.Merge(IReadOnlyList<string>? adapters, bool safe) => throw new PeftSharpException(BottleneckTuner.CannotMerge);
    void ITunerModel.Unmerge() { }
    void ITunerModel.Unload() => Unload();

    IEnumerable<(string Name, Parameter Param, string Adapter)> ITunerModel.AdapterParameters() =>
        configs.Keys.ToList().SelectMany(n => ParametersOf(n).Select(p => (p.Name, p.Param, n)));

    long ITunerModel.ExtraParameterCount => 0;

    AdapterSummary ITunerModel.Summary(string adapter)
    {
        var c = configs.TryGetValue(adapter, out var found) ? found : throw new PeftSharpException($"no adapter named \"{adapter}\"");
        return new AdapterSummary(MethodName(c), c.BottleneckSize(Model.Config.Hidden, 0).ToString(System.Globalization.CultureInfo.InvariantCulture),
            locations.Values.Count(l => l.adapters.Contains(adapter)), ParameterCount(adapter));
    }

    /// <summary>houlsby, pfeiffer or parallel when the config has that preset's placement, else "bottleneck".</summary>
    public static string MethodName(AdapterHubConfig c) =>
        c.IsParallel ? "parallel"
        : c.MhAdapter && c.OutputAdapter && !c.OriginalLnBefore ? "houlsby"
        : !c.MhAdapter && c.OutputAdapter && c.OriginalLnBefore ? "pfeiffer"
        : "bottleneck";
}
