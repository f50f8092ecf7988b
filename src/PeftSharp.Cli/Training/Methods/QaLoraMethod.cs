using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Quantization.Gptq;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>
/// <c>--method qa-lora</c>: QA-LoRA (docs/qa-lora.md): the base is group-quantized to --bits in groups of
/// --group-size input columns (a GPTQ base keeps its own quantization) and a LoRA adapter with use_qalora pools its
/// input per group, so that <c>merge</c> can fold it into the zero points.
/// </summary>
public sealed class QaLoraMethod : LoraMethod
{
    readonly Option<int> bits = new("--bits") { Description = "QA-LoRA: bits of the base's group-wise quantization (2, 3, 4 or 8)", DefaultValueFactory = _ => 4 };
    readonly Option<int> groupSize = new("--group-size") { Description = "QA-LoRA: input columns per quantization and pooling group (qalora_group_size)", DefaultValueFactory = _ => 32 };

    public override string Name => "qa-lora";
    public override IReadOnlyList<Option> Options => [bits, groupSize];

    protected override LoraConfig NewConfig(TrainSettings s)
    {
        int b = s.Get(bits), g = s.Get(groupSize);
        if (!GptqConfig.SupportedBits.Contains(b)) throw new PeftSharpException($"--bits: {b} is not supported; expected 2, 3, 4 or 8");
        if (g <= 0) throw new PeftSharpException($"--group-size: expected a positive integer, got {g}");
        return new LoraConfig { UseQalora = true, QaloraGroupSize = g, QaloraBits = b };
    }

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o, Models.ModelConfig model)
    {
        var config = (LoraConfig)CreateConfig(s, o);
        foreach (var (what, size) in new[] { ("hidden size", model.Hidden), ("intermediate size", model.Inner) })
            if (size % config.QaloraGroupSize != 0)
                throw new PeftSharpException($"--group-size: {config.QaloraGroupSize} does not divide the model's {what} {size} (every quantized layer's in_features)");
        return config;
    }
}
