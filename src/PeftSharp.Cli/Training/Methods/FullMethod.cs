using PeftSharp.Cli.Commands;
using PeftSharp.Peft;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>
/// <c>--method full</c>: full-parameter fine-tuning. Every weight of the model is trained (no adapter); --out receives the
/// whole model as a Hugging Face folder laid out like --model's. The optimizer is AdamW, or GaLore with
/// <c>--optimizer galore-adamw</c> (docs/galore.md).
/// </summary>
public sealed class FullMethod : TrainMethod
{
    public override string Name => "full";

    public override bool TrainsAdapter => false;

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) =>
        throw new InvalidOperationException("--method full trains the model itself and has no adapter config");
}
