using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Tuners.Hyperformer;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>
/// <c>--method hyperformer</c>: one hypernetwork generating every layer's bottleneck adapters from task embeddings,
/// trained on several tasks at once (a <c>task_id</c> on every record; docs/composition.md).
/// </summary>
public sealed class HyperformerMethod : TrainMethod
{
    readonly Option<double> reduction = new Option<double>("--hyper-reduction-factor") { Description = "Hyperformer: bottleneck width = hidden size // this", DefaultValueFactory = _ => 16 }.Above(0);
    readonly Option<int> embedding = new Option<int>("--task-embedding-dim") { Description = "Hyperformer: width of the task, layer-id and position embeddings", DefaultValueFactory = _ => 64 }.AtLeast(1);
    readonly Option<int> projected = new Option<int>("--projected-task-embedding-dim") { Description = "Hyperformer: width of the projector's output the generators read", DefaultValueFactory = _ => 64 }.AtLeast(1);
    readonly Option<int> taskHidden = new Option<int>("--task-hidden-dim") { Description = "Hyperformer: hidden width of the task projector", DefaultValueFactory = _ => 128 }.AtLeast(1);

    public override string Name => "hyperformer";
    public override IReadOnlyList<Option> Options => [TaskOptions.NumTasks, reduction, embedding, projected, taskHidden];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new HyperformerConfig
    {
        NumTasks = s.Get(TaskOptions.NumTasks),
        ReductionFactor = s.Get(reduction),
        TaskEmbeddingDim = s.Get(embedding),
        ProjectedTaskEmbeddingDim = s.Get(projected),
        TaskHiddenDim = s.Get(taskHidden),
    };
}
