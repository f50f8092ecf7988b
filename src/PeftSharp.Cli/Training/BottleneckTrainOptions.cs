using System.CommandLine;
using System.Text.Json.Nodes;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners.Bottleneck;

namespace PeftSharp.Cli.Training;

/// <summary>
/// <c>train --method houlsby|pfeiffer|parallel|bottleneck</c>: the bottleneck-adapter options and the config they make.
/// houlsby, pfeiffer and parallel are AdapterHub's presets (sub-layer adapters, saved in AdapterHub's layout);
/// bottleneck is LLM-Adapters' PEFT fork (adapters on Linear layers, <c>peft_type: "BOTTLENECK"</c>), with its flags
/// <c>--use-parallel-adapter</c> / <c>--use-adapterp</c> as in its finetune.py. New adapters start with a zero
/// up-projection (init_weights mam_adapter) unless --init-weights says otherwise.
/// </summary>
public sealed class BottleneckTrainOptions
{
    public static readonly string[] Methods = ["houlsby", "pfeiffer", "parallel", "bottleneck"];

    public Option<double?> ReductionFactor = new("--reduction-factor") { Description = "houlsby/pfeiffer/parallel: bottleneck = hidden // factor (AdapterHub; presets 16, 16, 2)" };
    public Option<int?> BottleneckSize = new("--bottleneck-size") { Description = "bottleneck width; for houlsby/pfeiffer/parallel it sets the reduction factor (LLM-Adapters default 256)" };
    public Option<string?> NonLinearity = new("--non-linearity") { Description = "adapter activation (presets: swish, relu, relu; bottleneck: tanh)" };
    public Option<string?> AdapterScaling = new("--adapter-scaling") { Description = "adapter output scaling s: a number or \"learned\" (presets 1, 1, 4; bottleneck 1)" };
    public Option<string> InitWeights = new("--init-weights") { Description = "mam_adapter (zero up-projection, default) or bert (normal 0.02)", DefaultValueFactory = _ => "mam_adapter" };
    public Option<bool> UseParallelAdapter = new("--use-parallel-adapter") { Description = "bottleneck: parallel adapters beside the targets (LLM-Adapters' Parallel)" };
    public Option<bool> UseAdapterP = new("--use-adapterp") { Description = "bottleneck: AdapterP's default targets" };

    public Option[] All => [ReductionFactor, BottleneckSize, NonLinearity, AdapterScaling, InitWeights, UseParallelAdapter, UseAdapterP];

    /// <summary>The adapter config for <paramref name="method"/> from the options; <paramref name="hidden"/> turns --bottleneck-size into a reduction factor.</summary>
    public PeftConfig Build(string method, TrainSettings s, int hidden, double dropout, TargetModules? targets)
    {
        string init = s.Get(InitWeights);
        JsonNode? scaling = s.Get(AdapterScaling) is { } text
            ? text == "learned" ? JsonValue.Create("learned")
              : double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) ? JsonValue.Create(v)
              : throw new PeftSharpException($"--adapter-scaling: expected a number or \"learned\", got \"{text}\"")
            : null;
        if (method == "bottleneck")
        {
            if (s.Get(ReductionFactor) is not null) throw new PeftSharpException("--reduction-factor: not a LLM-Adapters setting; use --bottleneck-size with --method bottleneck");
            var c = new BottleneckConfig
            {
                UseParallelAdapter = s.Get(UseParallelAdapter),
                UseAdapterP = s.Get(UseAdapterP),
                AdapterDropout = dropout,
                InitWeights = init,
                TargetModules = targets,
            };
            if (s.Get(BottleneckSize) is int d) c.BottleneckSize = d;
            if (s.Get(NonLinearity) is string nl) c.NonLinearity = nl;
            if (scaling is not null) c.Scaling = scaling;
            c.Normalize();
            return c;
        }
        if (s.Get(UseParallelAdapter) || s.Get(UseAdapterP)) throw new PeftSharpException("--use-parallel-adapter/--use-adapterp: only with --method bottleneck");
        if (targets is not null) throw new PeftSharpException($"--target: {method} adapters sit after sub-layers, not on named layers; use --method bottleneck to target layers");
        if (s.Get(BottleneckSize) is int size && s.Get(ReductionFactor) is not null) throw new PeftSharpException("--bottleneck-size and --reduction-factor: give one of them");
        double? rf = s.Get(ReductionFactor) ?? (s.Get(BottleneckSize) is int width ? TunerSizes.ReductionFor(hidden, width) : null);
        var preset = AdapterHubConfig.FromPresetName(method);
        var changes = new List<(string, JsonNode?)> { ("init_weights", init), ("dropout", dropout) };
        if (rf is double r) changes.Add(("reduction_factor", r));
        if (s.Get(NonLinearity) is string act) changes.Add(("non_linearity", act));
        if (scaling is not null) changes.Add(("scaling", scaling));
        return new AdapterHubPeftConfig { Hub = preset.With([.. changes]) };
    }
}

/// <summary>Bottleneck sizes in AdapterHub's terms.</summary>
public static class TunerSizes
{
    /// <summary>The reduction factor that gives a bottleneck of width <paramref name="width"/> (AdapterHub floors hidden / factor).</summary>
    public static double ReductionFor(int hidden, int width) => hidden / (width + 0.5);
}
