using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners.MultitaskPrompt;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>Options shared by the task-conditioned methods (one static instance, so each flag is added once).</summary>
internal static class TaskOptions
{
    public static readonly Option<int> NumTasks = new Option<int>("--num-tasks") { Description = "MPT, Hyperformer: num_tasks (task ids 0 … N−1 in the data's task_id field)", DefaultValueFactory = _ => 1 }.AtLeast(1);
}

/// <summary>
/// <c>--method mpt</c>: PEFT's multitask prompt tuning (docs/prompts.md). Every training example needs a
/// <c>task_id</c> field (0 … num_tasks − 1).
/// </summary>
public sealed class MultitaskPromptMethod : TrainMethod
{
    readonly Option<int> ranks = new Option<int>("--num-ranks") { Description = "MPT: num_ranks, the rank of each task's matrix", DefaultValueFactory = _ => 1 }.AtLeast(1);
    readonly Option<string> init = new("--mpt-init") { Description = "MPT: prompt_tuning_init RANDOM, TEXT, AVERAGE_SOURCE_TASKS, EXACT_SOURCE_TASK or ONLY_SOURCE_SHARED", DefaultValueFactory = _ => MultitaskPromptTuningInit.Random };
    readonly Option<string?> source = new("--mpt-init-from") { Description = "MPT: prompt_tuning_init_state_dict_path, a source MPT adapter folder or its .safetensors (source inits)" };
    readonly Option<int> sourceTask = new Option<int>("--mpt-init-task") { Description = "MPT: prompt_tuning_init_task (EXACT_SOURCE_TASK)", DefaultValueFactory = _ => 0 }.AtLeast(0);

    public override string Name => "mpt";
    public override IReadOnlyList<Option> Options => [PromptOptions.VirtualTokens, PromptOptions.InitText, TaskOptions.NumTasks, ranks, init, source, sourceTask];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new MultitaskPromptTuningConfig
    {
        NumVirtualTokens = s.Get(PromptOptions.VirtualTokens),
        PromptTuningInitMode = s.Get(init).ToUpperInvariant(),
        PromptTuningInitText = s.Get(PromptOptions.InitText),
        NumTasks = s.Get(TaskOptions.NumTasks),
        NumRanks = s.Get(ranks),
        PromptTuningInitStateDictPath = s.Get(source) is string p ? Path.GetFullPath(p) : null,
        PromptTuningInitTask = s.Get(sourceTask),
    };
}
