using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Mixtures.MoV;

/// <summary>
/// A model with MoV adapters: one <see cref="MoVLinear"/> per target linear; several active adapters multiply.
/// Weights file (<c>adapter_model.safetensors</c>, PeftSharp's layout): <c>base_model.model.{path}.mov.router.weight</c>
/// [E, in] and <c>….mov.ia3_l</c> [E, d].
/// </summary>
public sealed class MoVModel : MixtureTunerModel<MoVConfig>
{
    static readonly MoVTuner TunerInstance = new();

    MoVModel(CausalLM model) : base(model) { }

    /// <summary>A MoV model on <paramref name="model"/> with no adapter yet (the base model is frozen).</summary>
    public static MoVModel Attach(CausalLM model) => new(model);

    /// <summary>Freezes the base model and adds one trainable, active adapter.</summary>
    public static MoVModel Create(CausalLM model, MoVConfig config, string adapterName = AdapterFiles.DefaultAdapter, long? seed = null)
    {
        var m = new MoVModel(model);
        m.AddAdapter(adapterName, config, seed, trainable: true);
        m.SetAdapter(adapterName);
        return m;
    }

    /// <inheritdoc/>
    public override ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    protected override string MethodName => "mov";
    /// <inheritdoc/>
    protected override MoVConfig ReadConfig(string dir) => MoVConfig.Load(dir);
    /// <inheritdoc/>
    protected override string SizeOf(MoVConfig config) => $"{config.NumExperts}e";

    /// <inheritdoc/>
    protected override List<IMixtureComponent> Build(string name, MoVConfig config, Generator? generator)
    {
        config.Normalize();
        bool defaults = config.TargetModules is null;
        config.TargetModules ??= DenseMixtureTargets.DefaultTargets(Model.Config.ModelType);
        if (config.FeedforwardModules is null)
        {
            var ff = DenseMixtureTargets.DefaultFeedforward(Model.Config.ModelType);
            config.FeedforwardModules = defaults || config.TargetModules.Names is null ? ff
                : TargetModules.FromNames(ff.Names!.Where(f => config.TargetModules.Names.Contains(f, StringComparer.Ordinal)));
        }
        return DenseMixtureTargets.Find(Model, config.TargetModules, "MoV")
            .Select(t => (IMixtureComponent)new MoVLinear(t.Layer, t.Path, name, config,
                DenseMixtureTargets.IsFeedforward(config.FeedforwardModules, t.Path), Log, generator)).ToList();
    }

    /// <inheritdoc/>
    public override SortedDictionary<string, Tensor> StateDict(string adapter)
    {
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var l in ComponentsOf(adapter).OfType<MoVLinear>())
        {
            string key = $"{AdapterFiles.Prefix}{l.Path}.mov";
            result[$"{key}.router.weight"] = l.router.weight;
            result[$"{key}.ia3_l"] = l.ia3_l;
        }
        return result;
    }
}
