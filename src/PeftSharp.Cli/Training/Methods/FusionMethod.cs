using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Bottleneck;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>
/// <c>--method fusion</c>: AdapterFusion (docs/adapters.md) over AdapterHub adapters given with <c>--fuse DIR</c> (two or
/// more); only the fusion layers train, with AdapterHub's regularisation of the value matrices added to the loss.
/// </summary>
public sealed class FusionMethod : TrainMethod
{
    readonly Option<string[]> fuse = new("--fuse") { Description = "fusion: an AdapterHub adapter folder to fuse (repeat for each adapter)", AllowMultipleArgumentsPerToken = false };
    readonly Option<string> fusionType = new("--fusion-type") { Description = "fusion: AdapterHub preset (dynamic or static)", DefaultValueFactory = _ => "dynamic" };

    /// <summary>Declares the options.</summary>
    public FusionMethod() => fusionType.AcceptOnlyFromAmong("dynamic", "static");

    /// <inheritdoc/>
    public override string Name => "fusion";

    /// <inheritdoc/>
    public override IReadOnlyList<Option> Options => [fuse, fusionType];

    /// <inheritdoc/>
    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o)
    {
        var dirs = s.Get(fuse) ?? [];
        if (dirs.Length < 2) throw new PeftSharpException("--fuse: give at least two AdapterHub adapter folders to fuse (--fuse DIR --fuse DIR)");
        return new AdapterFusionPeftConfig { Fusion = AdapterFusionConfig.FromPresetName(s.Get(fusionType) ?? "dynamic"), AdapterDirs = dirs };
    }

    /// <inheritdoc/>
    public override MethodHooks Attach(PeftModel peft, string adapter, PeftConfig config, TrainSettings s, SharedMethodOptions o, ulong seed)
    {
        var fusion = peft.Get<AdapterFusionModel>() ?? throw new InvalidOperationException("fusion tuner missing");
        return new MethodHooks { ExtraLoss = fusion.RegularizationLoss };
    }
}
