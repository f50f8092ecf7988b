using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.IA3;
using PeftSharp.Tuners.Lora;
using TorchSharp.Modules;

namespace PeftSharp.Cli.Commands.Bench.Tuners;

/// <summary>One tuning method attached to a model for a benchmark: what trains, how to merge, how to turn it off.</summary>
public sealed class TunerSetup
{
    public required string Method { get; init; }
    public required IReadOnlyList<(string Name, Parameter Param)> Trainable { get; init; }
    /// <summary>Merges into the base weights (null: the method cannot be merged).</summary>
    public Action? Merge { get; init; }
    public Action? Unmerge { get; init; }
    /// <summary>Turns the method on or off (the others are not touched).</summary>
    public required Action<bool> SetEnabled { get; init; }
    public long TrainableCount => Trainable.Sum(p => p.Param.numel());

    /// <summary>The methods the tuner benchmarks compare.</summary>
    public static readonly string[] Methods = ["lora", "ia3", "houlsby", "parallel"];

    /// <summary>
    /// Attaches <paramref name="method"/> to <paramref name="model"/>. Sizes: LoRA rank <paramref name="loraRank"/>
    /// (alpha 2r) on <paramref name="loraTargets"/> (null: PEFT's default for the model type); Houlsby and parallel
    /// bottleneck widths from <paramref name="houlsbyReduction"/> / <paramref name="parallelReduction"/> (AdapterHub's
    /// reduction factors). New bottleneck adapters start with a zero up-projection (mam_adapter), LoRA with B = 0,
    /// unless <paramref name="randomInit"/> (for latency runs, where the values do not matter but must not be zero).
    /// </summary>
    public static TunerSetup Attach(CausalLM model, string method, int loraRank, TargetModules? loraTargets,
        double houlsbyReduction, double parallelReduction, long seed, bool randomInit = false)
    {
        switch (method)
        {
            case "lora":
            {
                var config = new LoraConfig { R = loraRank, LoraAlpha = 2 * loraRank, TargetModules = loraTargets };
                if (randomInit) config.InitLoraWeights = InitLoraWeights.False;
                var lora = LoraModel.Create(model, config, seed: seed);
                IDisposable? off = null;
                return new TunerSetup
                {
                    Method = method,
                    Trainable = lora.TrainableParameters(),
                    Merge = () => lora.Merge(),
                    Unmerge = () => lora.Unmerge(),
                    SetEnabled = on =>
                    {
                        if (on) { off?.Dispose(); off = null; }
                        else off ??= lora.DisableAdapters();
                    },
                };
            }
            case "houlsby" or "parallel":
            {
                var config = method == "houlsby" ? AdapterHubConfig.Houlsby(houlsbyReduction) : AdapterHubConfig.Parallel(parallelReduction);
                config = config.With(("init_weights", randomInit ? "bert" : "mam_adapter"));
                var hub = AdapterHubModel.Create(model, config, method, seed);
                return new TunerSetup
                {
                    Method = method,
                    Trainable = hub.ParametersOf(method).ToList(),
                    SetEnabled = on =>
                    {
                        if (on) hub.SetActive(method, trainable: hub.ParametersOf(method).Any(p => p.Param.requires_grad));
                        else if (hub.Active == method) hub.SetActive(null);
                    },
                };
            }
            case "ia3":
            {
                // PEFT's default targets for the model type; init_ia3_weights false only for latency runs (values do not matter there).
                var config = new IA3Config { InitIa3Weights = !randomInit };
                var ia3 = IA3Model.Create(model, config, seed: seed);
                IDisposable? off = null;
                return new TunerSetup
                {
                    Method = method,
                    Trainable = ia3.AdapterParameters().Select(p => (p.Name, p.Param)).ToList(),
                    Merge = () => ia3.Merge(),
                    Unmerge = () => ia3.Unmerge(),
                    SetEnabled = on =>
                    {
                        if (on) { off?.Dispose(); off = null; }
                        else off ??= ia3.DisableAdapters();
                    },
                };
            }
            default:
                throw new PeftSharpException($"--methods: unknown method \"{method}\" (expected {string.Join(", ", Methods)})");
        }
    }

    /// <summary>The reduction factor that gives a bottleneck of width <paramref name="width"/>.</summary>
    public static double ReductionFor(int hidden, int width) => Training.TunerSizes.ReductionFor(hidden, width);

    /// <summary>The bottleneck width whose adapter has about <paramref name="budget"/> parameters (per location: 2·H·d + d + H).</summary>
    public static int WidthForBudget(long budget, int hidden, int layers, int locationsPerLayer) =>
        (int)Math.Max(1, Math.Round(((double)budget / layers / locationsPerLayer - hidden) / (2.0 * hidden + 1)));
}

/// <summary>A method the benchmark would measure but this build does not have.</summary>
public sealed class TunerUnavailableException(string message) : Exception(message);
