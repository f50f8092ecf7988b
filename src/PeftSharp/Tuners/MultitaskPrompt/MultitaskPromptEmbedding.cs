using PeftSharp.Tuners.Prompts;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.MultitaskPrompt;

/// <summary>
/// PEFT's <c>MultitaskPromptEmbedding</c> (it derives from prompt tuning's embedding): a shared prompt
/// <c>embedding.weight</c> [N, token_dim] and per task a rank-r matrix <c>prefix_task_cols</c>[t] [N, r] ·
/// <c>prefix_task_rows</c>[t] [r, token_dim]; the prompt of an example of task t is
/// <c>embedding.weight ⊙ (prefix_task_cols[t] · prefix_task_rows[t])</c>. <see cref="PromptModule.Output"/> is the
/// shared prompt alone, which is what PEFT saves as <c>prompt_embeddings</c>.
/// </summary>
public sealed class MultitaskPromptEmbedding : PromptModule
{
    readonly Embedding embedding;
    readonly Parameter prefix_task_cols;
    readonly Parameter prefix_task_rows;

    /// <summary>
    /// The shared prompt <paramref name="initial"/> [N, token_dim] and task matrices for <paramref name="tasks"/> tasks of
    /// rank <paramref name="ranks"/>, drawn N(0, 0.02²) from <paramref name="gen"/> as PEFT's <c>torch.normal(0, 0.02)</c>.
    /// </summary>
    public MultitaskPromptEmbedding(Tensor initial, int tasks, int ranks, Generator? gen) : base(nameof(MultitaskPromptEmbedding))
    {
        long n = initial.shape[0], d = initial.shape[1];
        var device = initial.device;
        embedding = nn.Embedding(n, d, dtype: ScalarType.Float32, device: device);
        using (no_grad()) embedding.weight!.copy_(initial);
        using (var cols = randn([tasks, n, ranks], ScalarType.Float32, generator: gen).mul_(0.02))
            prefix_task_cols = new Parameter(cols.to(device));
        using (var rows = randn([tasks, ranks, d], ScalarType.Float32, generator: gen).mul_(0.02))
            prefix_task_rows = new Parameter(rows.to(device));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Parameter EmbeddingWeight => embedding.weight!;
    /// <summary>[num_tasks, N, r]: each task's column factor.</summary>
    public Parameter PrefixTaskCols => prefix_task_cols;
    /// <summary>[num_tasks, r, token_dim]: each task's row factor.</summary>
    public Parameter PrefixTaskRows => prefix_task_rows;
    /// <summary>Number of tasks.</summary>
    public long Tasks => prefix_task_cols.shape[0];
    /// <inheritdoc/>
    public override bool Direct => true;
    /// <inheritdoc/>
    protected override Tensor Encode(Tensor e) => e;

    /// <summary>
    /// PEFT's <c>forward(indices, task_ids)</c>: the prompt of each example, [B, N, token_dim] for <paramref name="taskIds"/>
    /// [B] (int64, each in 0 … num_tasks − 1; the caller checks the range).
    /// </summary>
    public Tensor Prompts(Tensor taskIds)
    {
        using var scope = NewDisposeScope();
        var ids = taskIds.to(ScalarType.Int64, prefix_task_cols.device);
        var cols = prefix_task_cols.index_select(0, ids);
        var rows = prefix_task_rows.index_select(0, ids);
        var task = cols.matmul(rows);
        return embedding.weight!.unsqueeze(0).mul(task).MoveToOuterDisposeScope();
    }
}
