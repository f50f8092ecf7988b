using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp.Modules;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>LLM-Adapters' bottleneck adapters in the tuner registry (<c>peft_type: "BOTTLENECK"</c>).</summary>
public sealed class BottleneckTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => BottleneckConfig.PeftTypeName;
    /// <inheritdoc/>
    public string Name => "bottleneck adapters (LLM-Adapters)";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => BottleneckConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => BottleneckModel.Attach(model);

    /// <summary>The one-line answer to a merge request (also for AdapterHub adapters).</summary>
    public const string CannotMerge = "bottleneck adapters cannot be merged (a non-linearity sits between their two projections)";
}

public sealed partial class BottleneckModel : ITunerModel
{
    static readonly BottleneckTuner TunerInstance = new();

    ITuner ITunerModel.Tuner => TunerInstance;
    IReadOnlyList<string> ITunerModel.Adapters => name is null ? [] : [name];
    IReadOnlyList<string> ITunerModel.ActiveAdapters => name is not null && active ? [name] : [];

    PeftConfig ITunerModel.ConfigOf(string adapter) => adapter == name ? Config! : throw new PeftSharpException($"no bottleneck adapter named \"{adapter}\"");

    void ITunerModel.AddAdapter(string adapter, PeftConfig config, long? seed, bool trainable) =>
        AddAdapter(adapter, config as BottleneckConfig ?? throw new PeftSharpException($"adapter \"{adapter}\": a {config.GetType().Name} is not a BOTTLENECK config"), seed, trainable);

    void ITunerModel.LoadAdapter(string dir, string adapter, bool trainable) => BottleneckFiles.LoadAdapter(this, dir, adapter, trainable);

    string ITunerModel.SaveAdapter(string dir, string adapter, string? baseModelNameOrPath)
    {
        if (adapter != name) throw new PeftSharpException($"no bottleneck adapter named \"{adapter}\"");
        string folder = AdapterFiles.FolderFor(dir, adapter);
        BottleneckFiles.Save(this, folder, baseModelNameOrPath);
        return folder;
    }

    void ITunerModel.SetAdapter(IReadOnlyList<string> names)
    {
        foreach (var n in names)
            if (n != name) throw new PeftSharpException($"no bottleneck adapter named \"{n}\"");
        SetActive(names.Count > 0);
    }

    void ITunerModel.SetTrainable(string adapter, bool value)
    {
        if (adapter != name) throw new PeftSharpException($"no bottleneck adapter named \"{adapter}\"");
        SetTrainable(value);
    }

    void ITunerModel.DeleteAdapter(string adapter)
    {
        if (adapter != name) throw new PeftSharpException($"no bottleneck adapter named \"{adapter}\"");
        Unload();
    }

    IDisposable ITunerModel.DisableAdapters()
    {
        bool before = disabled;
        SetEnabled(false);
        return new OnDispose(() => SetEnabled(!before));
    }

    string? ITunerModel.MergeUnsupported => BottleneckTuner.CannotMerge;
    void ITunerModel.Merge(IReadOnlyList<string>? adapters, bool safe) => throw new PeftSharpException(BottleneckTuner.CannotMerge);
    void ITunerModel.Unmerge() { }
    void ITunerModel.Unload() => Unload();

    IEnumerable<(string Name, Parameter Param, string Adapter)> ITunerModel.AdapterParameters() =>
        name is null ? [] : TrainableParameters().Select(p => (p.Name, p.Param, name));

    long ITunerModel.ExtraParameterCount => 0;

    AdapterSummary ITunerModel.Summary(string adapter)
    {
        if (adapter != name) throw new PeftSharpException($"no bottleneck adapter named \"{adapter}\"");
        string method = Config!.UseParallelAdapter ? "bottleneck-parallel" : Config.UseAdapterP ? "bottleneck-adapterp" : "bottleneck";
        return new AdapterSummary(method, Config.BottleneckSize.ToString(System.Globalization.CultureInfo.InvariantCulture), layers.Count, TrainableParameterCount);
    }
}
