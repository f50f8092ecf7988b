using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Mixtures.MixLora;
using PeftSharp.Tuners.Mixtures.MoLora;
using PeftSharp.Tuners.Mixtures.MoV;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>Options the mixture methods share (one instance each, so that mixlora, molora and mov read the same flag).</summary>
static class MixtureOptions
{
    public static readonly Option<int> NumExperts = new Option<int>("--num-experts") { Description = "mixlora/molora/mov: experts per layer (num_experts)", DefaultValueFactory = _ => 8 }.AtLeast(1);
    public static readonly Option<double> RouterInitRange = new Option<double>("--router-init-range") { Description = "mixlora/molora/mov: std of the router weights at init", DefaultValueFactory = _ => 0.02 }.AtLeast(0);
}

/// <summary>
/// <c>--method mixlora</c>: MixLoRA (docs/mixtures.md): top-k LoRA experts on the feed-forward network, LoRA on attention,
/// and the router's load-balancing loss × router_aux_loss_coef added to every step's loss (its values reported at the end).
/// </summary>
public sealed class MixLoraMethod : TrainMethod
{
    readonly Option<int> topK = new Option<int>("--top-k") { Description = "mixlora: experts per token (top_k)", DefaultValueFactory = _ => 2 }.AtLeast(1);
    readonly Option<double> auxLossCoef = new Option<double>("--aux-loss-coef") { Description = "mixlora: router_aux_loss_coef (0 turns the load-balancing loss off)", DefaultValueFactory = _ => 0.001 }.AtLeast(0);

    public override string Name => "mixlora";
    public override IReadOnlyList<Option> Options => [MixtureOptions.NumExperts, MixtureOptions.RouterInitRange, topK, auxLossCoef];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o)
    {
        double alpha = s.Get(o.Alpha);
        if (alpha != Math.Round(alpha)) throw new PeftSharpException($"--alpha: MixLoRA's lora_alpha is an integer (got {alpha})");
        var config = new MixLoraConfig
        {
            R = s.Get(o.R), LoraAlpha = (int)alpha, LoraDropout = s.Get(o.Dropout), UseRsLora = s.Get(o.RsLora),
            TargetModules = Targets(s, o), NumExperts = s.Get(MixtureOptions.NumExperts), TopK = s.Get(topK),
            RouterAuxLossCoef = s.Get(auxLossCoef), RouterInitRange = s.Get(MixtureOptions.RouterInitRange),
        };
        config.RouterLoss = config.RouterAuxLossCoef > 0;
        return config;
    }

    public override MethodHooks Attach(PeftModel peft, string adapter, PeftConfig config, TrainSettings s, SharedMethodOptions o, ulong seed)
    {
        var mix = peft.Get<MixLoraModel>()!;
        mix.Log.RecordForLoss = ((MixLoraConfig)config).RouterLoss;
        var values = new List<double>();
        return new MethodHooks
        {
            BeforeStep = _ => mix.Log.Clear(),
            ExtraLoss = () =>
            {
                var aux = mix.WeightedAuxiliaryLoss();
                mix.Log.Clear();
                if (aux is not null) values.Add(aux.item<float>());
                return aux;
            },
            OnFinish = () =>
            {
                mix.Log.RecordForLoss = false;
                mix.Log.Clear();
                return values.Count == 0 ? "MixLoRA: no load-balancing loss (router_aux_loss_coef 0)"
                    : $"MixLoRA load-balancing loss × {((MixLoraConfig)config).RouterAuxLossCoef} (in the logged loss): first {values[0]:G4}, last {values[^1]:G4}, mean {values.Average():G4} over {values.Count} steps";
            },
        };
    }
}

/// <summary><c>--method molora</c>: MoLoRA (dense softmax mixture of LoRA experts on each target linear; docs/mixtures.md).</summary>
public sealed class MoLoraMethod : TrainMethod
{
    public override string Name => "molora";
    public override IReadOnlyList<Option> Options => [MixtureOptions.NumExperts, MixtureOptions.RouterInitRange];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new MoLoraConfig
    {
        R = s.Get(o.R), LoraAlpha = s.Get(o.Alpha), LoraDropout = s.Get(o.Dropout), UseRsLora = s.Get(o.RsLora),
        TargetModules = Targets(s, o), NumExperts = s.Get(MixtureOptions.NumExperts), RouterInitRange = s.Get(MixtureOptions.RouterInitRange),
    };
}

/// <summary><c>--method mov</c>: MoV (dense softmax mixture of (IA)³ vectors on each target linear; docs/mixtures.md).</summary>
public sealed class MoVMethod : TrainMethod
{
    public override string Name => "mov";
    public override IReadOnlyList<Option> Options => [MixtureOptions.NumExperts, MixtureOptions.RouterInitRange];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new MoVConfig
    {
        TargetModules = Targets(s, o), NumExperts = s.Get(MixtureOptions.NumExperts), RouterInitRange = s.Get(MixtureOptions.RouterInitRange),
    };
}
