using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners.SideTuning;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>Options shared by LST and side tuning (one static instance, so each flag is added once).</summary>
internal static class SideNetworkOptions
{
    public static readonly Option<int> ReductionFactor = new Option<int>("--side-reduction-factor") { Description = "LST / side tuning: reduction_factor r, side network width = hidden size / r", DefaultValueFactory = _ => 8 }.AtLeast(1);
    public static readonly Option<string> SideInitMode = new("--side-init") { Description = "LST / side tuning: side_init pruned (structured pruning of the backbone) or random", DefaultValueFactory = _ => SideInit.Pruned };
    public static readonly Option<string> PruningNorm = new("--pruning-norm") { Description = "LST / side tuning: pruning_norm l1 or l2", DefaultValueFactory = _ => "l1" };
}

/// <summary><c>--method lst</c>: ladder side tuning (docs/side-tuning.md); the backbone runs without autograd.</summary>
public sealed class LstMethod : TrainMethod
{
    readonly Option<double> gateAlpha = new("--gate-alpha") { Description = "LST: initial gate logits gate_alpha (μ = sigmoid(α/T))", DefaultValueFactory = _ => 0.0 };
    readonly Option<double> gateTemperature = new Option<double>("--gate-temperature") { Description = "LST: gate_temperature T", DefaultValueFactory = _ => 0.1 }.Above(0);

    public override string Name => "lst";
    public override IReadOnlyList<Option> Options => [SideNetworkOptions.ReductionFactor, SideNetworkOptions.SideInitMode, SideNetworkOptions.PruningNorm, gateAlpha, gateTemperature];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new LstConfig
    {
        ReductionFactor = s.Get(SideNetworkOptions.ReductionFactor),
        SideInitMode = s.Get(SideNetworkOptions.SideInitMode),
        PruningNorm = s.Get(SideNetworkOptions.PruningNorm),
        GateAlpha = s.Get(gateAlpha),
        GateTemperature = s.Get(gateTemperature),
    };
}

/// <summary><c>--method side-tuning</c>: side tuning, α·base + (1 − α)·side with a learned α (docs/side-tuning.md).</summary>
public sealed class SideTuningMethod : TrainMethod
{
    readonly Option<double> blendInit = new Option<double>("--blend-init") { Description = "side tuning: blend_init, the base network's weight α at the start", DefaultValueFactory = _ => 0.9 }.InRange(0, 1, minInclusive: false, maxInclusive: false);

    public override string Name => "side-tuning";
    public override IReadOnlyList<Option> Options => [SideNetworkOptions.ReductionFactor, SideNetworkOptions.SideInitMode, SideNetworkOptions.PruningNorm, blendInit];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new SideTuningConfig
    {
        ReductionFactor = s.Get(SideNetworkOptions.ReductionFactor),
        SideInitMode = s.Get(SideNetworkOptions.SideInitMode),
        PruningNorm = s.Get(SideNetworkOptions.PruningNorm),
        BlendInit = s.Get(blendInit),
    };
}
