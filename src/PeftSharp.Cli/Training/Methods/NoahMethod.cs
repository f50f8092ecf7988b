using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Noah;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>
/// <c>--method noah</c>: trains a NOAH supernet (LoRA, bottleneck adapter and deep prompt in every layer), one sampled
/// sub-network per step; then <c>peftsharp noah-search</c> picks one under a parameter budget (docs/unipelt.md#noah).
/// </summary>
public sealed class NoahMethod : TrainMethod
{
    readonly Option<string> ranks = new("--noah-ranks") { Description = "NOAH: LoRA ranks to sample (comma-separated, 0 = no LoRA)", DefaultValueFactory = _ => "0,2,4,8" };
    readonly Option<string> dims = new("--noah-dims") { Description = "NOAH: adapter widths to sample (comma-separated, 0 = no adapter)", DefaultValueFactory = _ => "0,4,8,16" };
    readonly Option<string> lengths = new("--noah-lengths") { Description = "NOAH: prompt lengths to sample (comma-separated, 0 = no prompt)", DefaultValueFactory = _ => "0,5,10" };

    public override string Name => "noah";
    public override IReadOnlyList<Option> Options => [ranks, dims, lengths];

    static int[] Sizes(string flag, string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var result = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out result[i]))
                throw new PeftSharpException($"{flag}: \"{parts[i]}\" is not a whole number (expected sizes like 0,4,8)");
        return result;
    }

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o)
    {
        if (s.Get(o.RsLora)) throw new PeftSharpException("--rslora: not supported with --method noah");
        if (s.Get(o.Dropout) > 0) throw new PeftSharpException("--dropout: not supported with --method noah");
        var config = new NoahConfig
        {
            LoraRanks = Sizes("--noah-ranks", s.Get(ranks)),
            AdapterDims = Sizes("--noah-dims", s.Get(dims)),
            PromptLengths = Sizes("--noah-lengths", s.Get(lengths)),
            LoraAlpha = s.Get(o.Alpha),
            TargetModules = Targets(s, o),
        };
        config.Normalize();
        return config;
    }

    public override MethodHooks Attach(PeftModel peft, string adapter, PeftConfig config, TrainSettings s, SharedMethodOptions o, ulong seed)
    {
        var noah = peft.Get<NoahModel>()!;
        var sampler = new SubNetSampler((NoahConfig)config, (int)(seed & 0x7FFFFFFF));
        return new MethodHooks
        {
            BeforeStep = step => noah.SetSubNet(sampler.ForStep(step)),
            OnFinish = () =>
            {
                noah.SetSubNet(noah.Config!.Largest);
                return $"NOAH supernet trained over sub-networks of lora_ranks [{string.Join(", ", noah.Config.LoraRanks)}], adapter_dims [{string.Join(", ", noah.Config.AdapterDims)}], prompt_lengths [{string.Join(", ", noah.Config.PromptLengths)}]; pick one with peftsharp noah-search";
            },
        };
    }
}
