using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp.Modules;

namespace PeftSharp.Tuners.Lora;

/// <summary>LoRA in the tuner registry (<c>peft_type: "LORA"</c>; also DoRA and DyLoRA adapters, which are LoRA configs on disk).</summary>
public sealed class LoraTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => PeftTypes.Lora;
    /// <inheritdoc/>
    public string Name => "LoRA";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => LoraConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => LoraModel.Attach(model);
}

public sealed partial class LoraModel : ITunerModel
{
    static readonly LoraTuner TunerInstance = new();

    /// <summary>A LoRA model on <paramref name="model"/> with no adapter yet (the base model is frozen).</summary>
    public static LoraModel Attach(CausalLM model) => new(model, model.Config.ModelType);

    ITuner ITunerModel.Tuner => TunerInstance;
    IReadOnlyList<string> ITunerModel.Adapters => [.. configs.Keys];
    PeftConfig ITunerModel.ConfigOf(string adapter) => configs[adapter];

    void ITunerModel.AddAdapter(string name, PeftConfig config, long? seed, bool trainable)
    {
        AddAdapter(name, config as LoraConfig ?? throw new PeftSharpException($"adapter \"{name}\": a {config.GetType().Name} is not a LoRA config"), seed, trainable);
    }

    void ITunerModel.LoadAdapter(string dir, string name, bool trainable) => AdapterFiles.LoadAdapter(this, dir, name, trainable);
    string ITunerModel.SaveAdapter(string dir, string name, string? baseModelNameOrPath) => AdapterFiles.Save(this, dir, name, baseModelNameOrPath);
    void ITunerModel.SetAdapter(IReadOnlyList<string> names) => SetAdapter([.. names]);
    string? ITunerModel.MergeUnsupported => null;
    void ITunerModel.Merge(IReadOnlyList<string>? adapters, bool safe) => Merge(adapters, safe);
    void ITunerModel.Unload() => Unload();
    long ITunerModel.ExtraParameterCount => modulesToSave.Values.Sum(m => m.CopySize * m.Adapters.Count());

    AdapterSummary ITunerModel.Summary(string adapter)
    {
        var c = configs[adapter];
        int layers = linears.Values.Count(l => l.Adapters.ContainsKey(adapter)) + embeddings.Values.Count(l => l.Adapters.ContainsKey(adapter));
        long count = AdapterParameters().Where(p => p.Adapter == adapter).Sum(p => p.Param.numel());
        return new AdapterSummary(c.UseDora ? "dora" : "lora", c.R.ToString(System.Globalization.CultureInfo.InvariantCulture), layers, count);
    }
}
