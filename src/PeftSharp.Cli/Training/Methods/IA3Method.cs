using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners.IA3;

namespace PeftSharp.Cli.Training.Methods;

/// <summary><c>--method ia3</c>: PEFT's (IA)³ (docs/ia3.md); --target and --feedforward default to PEFT's per model type.</summary>
public sealed class IA3Method : TrainMethod
{
    readonly Option<string?> feedforward = new("--feedforward") { Description = "(IA)³: comma-separated feed-forward target modules, which scale their input (default: PEFT's for the model type)" };

    public override string Name => "ia3";
    public override IReadOnlyList<Option> Options => [feedforward];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new IA3Config
    {
        TargetModules = Targets(s, o),
        FeedforwardModules = s.Get(feedforward) is string ff ? TargetModules.FromNames(ff.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)) : null,
    };
}
