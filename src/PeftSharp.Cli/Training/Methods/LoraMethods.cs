using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Cli.Training.Methods;

/// <summary><c>--method lora</c>: PEFT's LoRA (r, lora_alpha, lora_dropout, use_rslora, target_modules; LoRA+ groups).</summary>
public class LoraMethod : TrainMethod
{
    public override string Name => "lora";

    protected virtual LoraConfig NewConfig(TrainSettings s) => new();

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o)
    {
        var config = NewConfig(s);
        config.R = s.Get(o.R);
        config.UseRslora = s.Get(o.RsLora);
        config.LoraAlpha = s.Get(o.Alpha);
        config.LoraDropout = s.Get(o.Dropout);
        config.TargetModules = Targets(s, o) ?? config.TargetModules;
        return config;
    }

    public override IReadOnlyList<ParameterGroup> Groups(PeftModel peft, double lr, double weightDecay, TrainSettings s, SharedMethodOptions o) =>
        s.Get(o.LoraPlusRatio) is double ratio
            ? LoraPlus.Groups(peft.Get<LoraModel>()!, lr, ratio, weightDecay).Select(g => new ParameterGroup(g.Parameters, g.LearningRate, g.WeightDecay)).ToList()
            : ParameterGroups.DecayAndNoDecay(peft.TrainableParameters(), lr, weightDecay);
}

/// <summary><c>--method dora</c>: LoRA with use_dora (weight-decomposed LoRA).</summary>
public sealed class DoraMethod : LoraMethod
{
    public override string Name => "dora";
    protected override LoraConfig NewConfig(TrainSettings s) => new() { UseDora = true };
}
