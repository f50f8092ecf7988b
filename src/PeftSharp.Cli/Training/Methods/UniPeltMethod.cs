using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners.UniPelt;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>Options UniPELT and NOAH share (one static instance, so each flag is added once).</summary>
internal static class GatedOptions
{
    public static readonly Option<int> AdapterDim = new Option<int>("--adapter-dim") { Description = "UniPELT: bottleneck width of the gated adapter", DefaultValueFactory = _ => 16 }.AtLeast(1);
}

/// <summary>
/// <c>--method unipelt</c>: gated LoRA (--r, --alpha, --target), gated key/value prefix (--num-virtual-tokens) and a
/// gated bottleneck adapter (--adapter-dim) in every layer, trained together (docs/unipelt.md).
/// </summary>
public sealed class UniPeltMethod : TrainMethod
{
    public override string Name => "unipelt";
    public override IReadOnlyList<Option> Options => [PromptOptions.VirtualTokens, GatedOptions.AdapterDim];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o)
    {
        if (s.Get(o.RsLora)) throw new PeftSharpException("--rslora: not supported with --method unipelt");
        if (s.Get(o.Dropout) > 0) throw new PeftSharpException("--dropout: not supported with --method unipelt (its parts have no dropout)");
        var config = new UniPeltConfig
        {
            R = s.Get(o.R),
            LoraAlpha = s.Get(o.Alpha),
            TargetModules = Targets(s, o),
            NumVirtualTokens = s.Get(PromptOptions.VirtualTokens),
            BottleneckSize = s.Get(GatedOptions.AdapterDim),
        };
        config.Normalize();
        return config;
    }
}
