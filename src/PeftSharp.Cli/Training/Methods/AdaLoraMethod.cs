using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.AdaLora;

namespace PeftSharp.Cli.Training.Methods;

/// <summary><c>--method adalora</c>: PEFT's AdaLoRA, with the orthogonal regulariser and rank allocation each step (docs/adalora.md).</summary>
public sealed class AdaLoraMethod : TrainMethod
{
    readonly Option<int> targetR = new("--target-r") { Description = "AdaLoRA: average rank per layer after pruning (target_r)", DefaultValueFactory = _ => 8 };
    readonly Option<int> initR = new("--init-r") { Description = "AdaLoRA: initial rank of every layer (init_r)", DefaultValueFactory = _ => 12 };
    readonly Option<int> tinit = new("--tinit") { Description = "AdaLoRA: steps before pruning starts", DefaultValueFactory = _ => 0 };
    readonly Option<int> tfinal = new("--tfinal") { Description = "AdaLoRA: last steps, trained with the final ranks fixed", DefaultValueFactory = _ => 0 };
    readonly Option<int> deltaT = new("--delta-t") { Description = "AdaLoRA: steps between two rank allocations", DefaultValueFactory = _ => 1 };
    readonly Option<double> orthRegWeight = new("--orth-reg-weight") { Description = "AdaLoRA: weight of the orthogonal regulariser", DefaultValueFactory = _ => 0.5 };

    public override string Name => "adalora";
    public override IReadOnlyList<Option> Options => [targetR, initR, tinit, tfinal, deltaT, orthRegWeight];

    // AdaLoRA ignores r (init_r is its rank) and rsLoRA.
    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new AdaLoraConfig
    {
        TargetR = s.Get(targetR), InitR = s.Get(initR), Tinit = s.Get(tinit), Tfinal = s.Get(tfinal),
        DeltaT = s.Get(deltaT), OrthRegWeight = s.Get(orthRegWeight),
        LoraAlpha = s.Get(o.Alpha), LoraDropout = s.Get(o.Dropout), TargetModules = Targets(s, o),
    };

    public override MethodHooks Attach(PeftModel peft, string adapter, PeftConfig config, TrainSettings s, SharedMethodOptions o, ulong seed)
    {
        var ada = peft.Get<AdaLoraModel>()!;
        var adaConfig = (AdaLoraConfig)config;
        return new MethodHooks
        {
            // The regulariser joins each step's loss; ranks are allocated after each optimizer step with PEFT's
            // global_step = steps done (1-based), so the final allocation comes at step total_step − tfinal.
            ExtraLoss = ada.OrthogonalRegularization,
            AfterOptimizerStep = step => ada.UpdateAndAllocate(step + 1),
            OnTotalSteps = total =>
            {
                adaConfig.TotalStep = checked((int)total);
                adaConfig.Normalize(); // PEFT's checks of the schedule against total_step
            },
            SaveState = dir => ada.Allocator?.Save(Path.Combine(dir, RankAllocator.StateFileName)),
            LoadState = dir =>
            {
                ada.Allocator!.Load(Path.Combine(dir, RankAllocator.StateFileName));
                adaConfig.RankPattern = AdaLoraConfig.Load(dir).RankPattern;
            },
            OnFinish = () => $"AdaLoRA ranks kept: {string.Join(", ", ada.KeptRanks().Select(kv => $"{kv.Key} {kv.Value}"))}",
        };
    }
}
