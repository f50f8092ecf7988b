using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>AdaLoRA in the tuner registry (<c>peft_type: "ADALORA"</c>).</summary>
public sealed class AdaLoraTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => PeftTypes.AdaLora;
    /// <inheritdoc/>
    public string Name => "AdaLoRA";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => AdaLoraConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => AdaLoraModel.Attach(model);
}

public sealed partial class AdaLoraModel : ITunerModel
{
    static readonly AdaLoraTuner TunerInstance = new();

    /// <summary>An AdaLoRA model on <paramref name="model"/> with no adapter yet (the base model is frozen).</summary>
    public static AdaLoraModel Attach(CausalLM model) => new(model, model.Config.ModelType);

    ITuner ITunerModel.Tuner => TunerInstance;
    IReadOnlyList<string> ITunerModel.Adapters => [.. configs.Keys];
    PeftConfig ITunerModel.ConfigOf(string adapter) => configs[adapter];

    void ITunerModel.AddAdapter(string name, PeftConfig config, long? seed, bool trainable)
    {
        AddAdapter(name, config as AdaLoraConfig ?? throw new PeftSharpException($"adapter \"{name}\": a {config.GetType().Name} is not an AdaLoRA config"), seed, trainable);
    }

    void ITunerModel.LoadAdapter(string dir, string name, bool trainable) => AdaLoraFiles.LoadAdapter(this, dir, name, trainable);
    string ITunerModel.SaveAdapter(string dir, string name, string? baseModelNameOrPath) => AdaLoraFiles.Save(this, dir, name, baseModelNameOrPath);
    void ITunerModel.SetAdapter(IReadOnlyList<string> names) => SetAdapter([.. names]);
    string? ITunerModel.MergeUnsupported => null;
    void ITunerModel.Merge(IReadOnlyList<string>? adapters, bool safe) => Merge(adapters, safe);
    void ITunerModel.Unload() => Unload();
    long ITunerModel.ExtraParameterCount => 0;

    /// <inheritdoc/>
    public void SetTrainable(string name, bool value)
    {
        if (!configs.ContainsKey(name)) throw new PeftSharpException($"no adapter named \"{name}\"");
        // The trainable adapter owns the rank allocator, made when it was added.
        if (value && TrainableAdapter != name)
            throw new PeftSharpException($"AdaLoRA adapter \"{name}\" was added frozen; only the adapter added as trainable can train");
        trainable[name] = value;
        UpdateRequiresGrad();
    }

    /// <inheritdoc/>
    public void DeleteAdapter(string name)
    {
        if (!configs.Remove(name)) throw new PeftSharpException($"no adapter named \"{name}\"");
        foreach (var l in layers.Values) if (l.Contains(name)) l.DeleteAdapter(name);
        trainable.Remove(name);
        if (TrainableAdapter == name) { TrainableAdapter = null; Allocator = null; }
        SetAdapter(active.Where(a => a != name).ToArray());
    }

    AdapterSummary ITunerModel.Summary(string adapter)
    {
        var c = configs[adapter];
        int count = layers.Values.Count(l => l.Contains(adapter));
        long parameters = AdapterParameters().Where(p => p.Adapter == adapter).Sum(p => p.Param.numel());
        return new AdapterSummary("adalora", c.InitR.ToString(System.Globalization.CultureInfo.InvariantCulture), count, parameters);
    }
}
