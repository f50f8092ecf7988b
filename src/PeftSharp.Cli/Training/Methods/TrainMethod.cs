using System.CommandLine;
using System.Reflection;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>The options every method may read: the adapter size knobs shared by the LoRA family, and the targets.</summary>
public sealed class SharedMethodOptions
{
    public Option<int> R { get; } = new Option<int>("--r") { Description = "LoRA rank (DyLoRA: the largest rank)", DefaultValueFactory = _ => 8 }.AtLeast(1);
    public Option<double> Alpha { get; } = new Option<double>("--alpha") { Description = "lora_alpha", DefaultValueFactory = _ => 16 }.Above(0);
    public Option<double> Dropout { get; } = new Option<double>("--dropout") { Description = "lora_dropout", DefaultValueFactory = _ => 0.0 }.InRange(0, 1, maxInclusive: false);
    public Option<string?> Target { get; } = new("--target") { Description = "comma-separated target modules, or all-linear (default: PEFT's for the model type)" };
    public Option<bool> RsLora { get; } = new("--rslora") { Description = "scale by α/√r (rsLoRA)" };
    public Option<double?> LoraPlusRatio { get; } = new Option<double?>("--lora-plus-ratio") { Description = "LoRA+: learning rate of B = ratio × lr" }.Above(0);

    public IReadOnlyList<Option> All => [R, Alpha, Dropout, Target, RsLora, LoraPlusRatio];
}

/// <summary>What training does for a method beyond plain optimizer steps (all optional).</summary>
public sealed class MethodHooks
{
    public Action<long>? BeforeStep { get; init; }
    public Func<Tensor?>? ExtraLoss { get; init; }
    public Action<long>? AfterOptimizerStep { get; init; }
    /// <summary>Called once the trainer knows the number of steps (AdaLoRA's total_step).</summary>
    public Action<long>? OnTotalSteps { get; init; }
    /// <summary>Extra state written into each checkpoint folder, and read back on --resume.</summary>
    public Action<string>? SaveState { get; init; }
    public Action<string>? LoadState { get; init; }
    /// <summary>Called after training, before the adapter is saved; may return a line for stderr.</summary>
    public Func<string?>? OnFinish { get; init; }
}

/// <summary>
/// One value of <c>train --method</c>. Every non-abstract subclass in this assembly with a public parameterless
/// constructor is a method (<see cref="TrainMethods"/> finds them), so adding a method is one new file: its name, the
/// options only it reads, how its PEFT config is built, and its training hooks. Options of different methods need
/// different names (or one shared static instance).
/// </summary>
public abstract class TrainMethod
{
    /// <summary>The --method value ("lora", "ia3").</summary>
    public abstract string Name { get; }

    /// <summary>False for methods that train the model's own weights (<c>full</c>): no adapter is added and --out gets the model.</summary>
    public virtual bool TrainsAdapter => true;

    /// <summary>Options only this method reads; added to <c>train</c> and accepted as --config keys.</summary>
    public virtual IReadOnlyList<Option> Options => [];

    /// <summary>The new adapter's config from the command line.</summary>
    public abstract PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o);

    /// <summary>The config when it depends on the base model's shape (bottleneck widths); by default the model is not needed.</summary>
    public virtual PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o, Models.ModelConfig model) => CreateConfig(s, o);

    /// <summary>Hooks for the trainer, after the adapter was added to <paramref name="peft"/>.</summary>
    public virtual MethodHooks Attach(PeftModel peft, string adapter, PeftConfig config, TrainSettings s, SharedMethodOptions o, ulong seed) => new();

    /// <summary>Optimizer groups: decay for matrices, none for vectors; methods with their own rule (LoRA+) override.</summary>
    public virtual IReadOnlyList<ParameterGroup> Groups(PeftModel peft, double lr, double weightDecay, TrainSettings s, SharedMethodOptions o)
    {
        if (s.Get(o.LoraPlusRatio) is not null) throw new PeftSharpException($"--lora-plus-ratio: not supported with --method {Name}");
        return ParameterGroups.DecayAndNoDecay(peft.TrainableParameters(), lr, weightDecay);
    }

    /// <summary>Applies --target to a config's target_modules when given.</summary>
    protected static TargetModules? Targets(TrainSettings s, SharedMethodOptions o) =>
        s.Get(o.Target) is string target ? CliOptions.ParseTargets(target) : null;
}

/// <summary>The registered train methods, found by reflection in this assembly.</summary>
public static class TrainMethods
{
    /// <summary>New instances of every method (each holds its own option objects), ordered by name.</summary>
    public static IReadOnlyList<TrainMethod> Create() =>
        typeof(TrainMethod).Assembly.GetTypes()
            .Where(t => !t.IsAbstract && typeof(TrainMethod).IsAssignableFrom(t) && t.GetConstructor(BindingFlags.Public | BindingFlags.Instance, Type.EmptyTypes) is not null)
            .Select(t => (TrainMethod)Activator.CreateInstance(t)!)
            .OrderBy(m => m.Name, StringComparer.Ordinal)
            .ToList();
}
