using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.DyLora;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Cli.Training.Methods;

/// <summary><c>--method dylora</c>: a LoRA adapter trained at a rank sampled every step (docs/dylora.md).</summary>
public sealed class DyLoraMethod : LoraMethod
{
    readonly Option<int> rankMin = new("--rank-min") { Description = "DyLoRA: smallest rank sampled", DefaultValueFactory = _ => 1 };
    readonly Option<string> rankDistribution = new("--rank-distribution") { Description = "DyLoRA: uniform or geometric", DefaultValueFactory = _ => "uniform" };
    readonly Option<bool> notFrozen = new("--dylora-not-frozen") { Description = "DyLoRA: train all of the first b components (default: only component b)" };

    public override string Name => "dylora";
    public override IReadOnlyList<Option> Options => [rankMin, rankDistribution, notFrozen];

    protected override LoraConfig NewConfig(TrainSettings s) =>
        new DyLoraConfig { RMin = s.Get(rankMin), Distribution = s.Get(rankDistribution), Frozen = !s.Get(notFrozen) };

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o)
    {
        var config = (DyLoraConfig)base.CreateConfig(s, o);
        config.Validate();
        return config;
    }

    public override MethodHooks Attach(PeftModel peft, string adapter, PeftConfig config, TrainSettings s, SharedMethodOptions o, ulong seed)
    {
        var dy = (DyLoraConfig)config;
        var lora = peft.Get<LoraModel>()!;
        var sampler = new RankSampler(dy.RMin, dy.R, dy.Distribution, dy.GeometricP, (int)seed);
        return new MethodHooks
        {
            BeforeStep = step => lora.SetRank(sampler.ForStep(step), frozen: dy.Frozen),
            OnFinish = () => { lora.SetRank(null); return null; },
        };
    }
}
