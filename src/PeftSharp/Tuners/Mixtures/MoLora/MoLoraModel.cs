using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures.MoLora;

/// <summary>
/// A model with MoLoRA adapters: one <see cref="MoLoraLinear"/> per target linear. Several active adapters add up.
/// Weights file (<c>adapter_model.safetensors</c>, PeftSharp's layout): <c>base_model.model.{path}.molora.router.weight</c>
/// [E, in], <c>….molora.lora_A</c> [E, r, in], <c>….molora.lora_B</c> [E, out, r].
/// </summary>
public sealed class MoLoraModel : MixtureTunerModel<MoLoraConfig>
{
    static readonly MoLoraTuner TunerInstance = new();

    MoLoraModel(CausalLM model) : base(model) { }

    /// <summary>A MoLoRA model on <paramref name="model"/> with no adapter yet (the base model is frozen).</summary>
    public static MoLoraModel Attach(CausalLM model) => new(model);

    /// <summary>Freezes the base model and adds one trainable, active adapter.</summary>
    public static MoLoraModel Create(CausalLM model, MoLoraConfig config, string adapterName = AdapterFiles.DefaultAdapter, long? seed = null)
    {
        var m = new MoLoraModel(model);
        m.AddAdapter(adapterName, config, seed, trainable: true);
        m.SetAdapter(adapterName);
        return m;
    }

    /// <inheritdoc/>
    public override ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    protected override string MethodName => "molora";
    /// <inheritdoc/>
    protected override MoLoraConfig ReadConfig(string dir) => MoLoraConfig.Load(dir);
    /// <inheritdoc/>
    protected override string SizeOf(MoLoraConfig config) => $"{config.NumExperts}e r{config.R}";

    /// <inheritdoc/>
    protected override List<IMixtureComponent> Build(string name, MoLoraConfig config, Generator? generator)
    {
        config.Normalize();
        config.TargetModules ??= DenseMixtureTargets.DefaultTargets(Model.Config.ModelType);
        return DenseMixtureTargets.Find(Model, config.TargetModules, "MoLoRA")
            .Select(t => (IMixtureComponent)new MoLoraLinear(t.Layer, t.Path, name, config, Log, generator)).ToList();
    }

    /// <inheritdoc/>
    public override SortedDictionary<string, Tensor> StateDict(string adapter)
    {
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var l in ComponentsOf(adapter).OfType<MoLoraLinear>())
        {
            string key = $"{AdapterFiles.Prefix}{l.Path}.molora";
            result[$"{key}.router.weight"] = l.router.weight;
            result[$"{key}.lora_A"] = l.experts.lora_A;
            result[$"{key}.lora_B"] = l.experts.lora_B;
        }
        return result;
    }
}
