using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.MultitaskPrompt;

/// <summary>
/// Extension point 4 for multitask prompt tuning: each sequence gets the prompt of its own task in front of its token
/// embeddings (PEFT's <c>get_prompt(batch_size, task_ids)</c>). The task ids are the model's
/// <see cref="ExtensionPoints.TaskIds"/> ([B], or one id for every row).
/// </summary>
internal sealed class TaskPrompt(MultitaskPromptEmbedding module, int tokens, ExtensionPoints extensions) : IInputEmbeddingRewrite
{
    public int PrependedTokens => tokens;

    public Tensor Rewrite(Tensor embeddings, Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        long batch = embeddings.shape[0];
        var ids = TaskIdRange.Check(extensions.TaskIds, batch, module.Tasks, "multitask prompt tuning");
        var prompts = module.Prompts(ids).to(embeddings.dtype, embeddings.device);
        return cat([prompts, embeddings], 1).MoveToOuterDisposeScope();
    }
}
