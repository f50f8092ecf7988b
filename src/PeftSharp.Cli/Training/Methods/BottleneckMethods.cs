using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>
/// <c>--method houlsby|pfeiffer|parallel|bottleneck</c>: bottleneck adapters (docs/adapters.md). The four share one set
/// of options (<see cref="BottleneckTrainOptions"/>); --dropout and --target are the shared ones.
/// </summary>
public abstract class BottleneckMethod : TrainMethod
{
    static readonly BottleneckTrainOptions Shared = new();

    public override IReadOnlyList<Option> Options => Shared.All;

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) =>
        throw new InvalidOperationException("bottleneck adapters are sized from the base model: call CreateConfig with its ModelConfig");

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o, ModelConfig model) =>
        Shared.Build(Name, s, model.Hidden, s.Get(o.Dropout), Targets(s, o));
}

public sealed class HoulsbyMethod : BottleneckMethod { public override string Name => "houlsby"; }
public sealed class PfeifferMethod : BottleneckMethod { public override string Name => "pfeiffer"; }
public sealed class ParallelAdapterMethod : BottleneckMethod { public override string Name => "parallel"; }
public sealed class LlmAdaptersBottleneckMethod : BottleneckMethod { public override string Name => "bottleneck"; }
