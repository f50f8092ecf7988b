using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// Examples padded on the right to the longest one: <see cref="InputIds"/> and <see cref="Labels"/> [B, T] (int64),
/// <see cref="AttentionMask"/> [B, T] (1 for real tokens, 0 for padding); padded labels are −100.
/// </summary>
public sealed class Batch : IDisposable
{
    Batch(Tensor inputIds, Tensor labels, Tensor attentionMask, bool hasPadding, long tokens, long labelledTokens, Tensor? taskIds)
    {
        TaskIds = taskIds;
        InputIds = inputIds;
        Labels = labels;
        AttentionMask = attentionMask;
        HasPadding = hasPadding;
        Tokens = tokens;
        LabelledTokens = labelledTokens;
    }

    /// <summary>Token ids [B, T] (int64), right-padded.</summary>
    public Tensor InputIds { get; }
    /// <summary>Labels [B, T] (int64): -100 where no loss is taken (padding, masked prompt).</summary>
    public Tensor Labels { get; }
    /// <summary>Attention mask [B, T] (int64): 1 for real tokens, 0 for padding.</summary>
    public Tensor AttentionMask { get; }
    /// <summary>Task ids [B] (int64) when every example has one (<see cref="TrainingExample.TaskId"/>), else null.</summary>
    public Tensor? TaskIds { get; }
    /// <summary>Whether any row is padded.</summary>
    public bool HasPadding { get; }
    /// <summary>Real (non-padding) tokens.</summary>
    public long Tokens { get; }
    /// <summary>Tokens that carry loss after the shift.</summary>
    public long LabelledTokens { get; }

    /// <summary>
    /// The mask to give <c>CausalLM.Hidden</c>: null when nothing is padded, so attention keeps libtorch's fused
    /// causal kernel; the explicit mask otherwise.
    /// </summary>
    public Tensor? ModelMask => HasPadding ? AttentionMask : null;

    /// <summary>Pads and stacks the examples. The tensors are created on <paramref name="device"/> in the caller's dispose scope.</summary>
    /// <param name="padTokenId">Written at padded positions; its value does not matter (masked, no loss) but must be a valid id.</param>
    public static Batch Collate(IReadOnlyList<TrainingExample> examples, long padTokenId, Device? device = null)
    {
        if (examples.Count == 0) throw new ArgumentException("a batch needs at least one example", nameof(examples));
        int b = examples.Count, t = examples.Max(e => e.Length);
        var ids = new long[b * t];
        var labels = new long[b * t];
        var mask = new long[b * t];
        long tokens = 0, labelled = 0;
        for (int i = 0; i < b; i++)
        {
            var e = examples[i];
            for (int j = 0; j < t; j++)
            {
                bool real = j < e.Length;
                ids[i * t + j] = real ? e.InputIds[j] : padTokenId;
                labels[i * t + j] = real ? e.Labels[j] : CausalLMLoss.IgnoreIndex;
                mask[i * t + j] = real ? 1 : 0;
            }
            tokens += e.Length;
            labelled += e.LabelledTokens;
        }
        int withTask = examples.Count(e => e.TaskId is not null);
        if (withTask != 0 && withTask != b)
            throw new PeftSharpException($"{b - withTask} of {b} examples in a batch have no task_id; give every example a task_id or none");
        Tensor? taskIds = withTask == 0 ? null : tensor(examples.Select(e => (long)e.TaskId!.Value).ToArray(), device: device);
        return new Batch(
            tensor(ids, [b, t], device: device), tensor(labels, [b, t], device: device), tensor(mask, [b, t], device: device),
            hasPadding: tokens < (long)b * t, tokens, labelled, taskIds);
    }

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        InputIds.Dispose();
        Labels.Dispose();
        AttentionMask.Dispose();
        TaskIds?.Dispose();
    }
}
