namespace PeftSharp.Training;

/// <summary>
/// One training sequence: token ids and their labels, not yet shifted (the loss shifts: position t predicts
/// label t+1). A label of <see cref="CausalLMLoss.IgnoreIndex"/> (−100) carries no loss.
/// </summary>
public sealed record TrainingExample
{
    /// <summary>An example of token ids and labels of the same length (label -100: no loss).</summary>
    /// <exception cref="ArgumentException">Different lengths, or no tokens.</exception>
    public TrainingExample(int[] inputIds, int[] labels)
    {
        if (inputIds.Length != labels.Length)
            throw new ArgumentException($"{inputIds.Length} input ids but {labels.Length} labels", nameof(labels));
        if (inputIds.Length == 0) throw new ArgumentException("an example needs at least one token", nameof(inputIds));
        InputIds = inputIds;
        Labels = labels;
    }

    /// <summary>Token ids.</summary>
    public int[] InputIds { get; }
    /// <summary>Labels, one per token; -100 where no loss is taken.</summary>
    public int[] Labels { get; }
    /// <summary>Number of tokens.</summary>
    public int Length => InputIds.Length;

    /// <summary>The example's task (the JSONL field <c>task_id</c>) for task-conditioned methods (MPT, Hyperformer); null when not given.</summary>
    public int? TaskId { get; init; }

    /// <summary>Tokens that carry loss after the shift.</summary>
    public long LabelledTokens => CausalLMLoss.CountLabelled(Labels);
}

/// <summary>Examples to train on, plus what the loader wants the user to know (dropped lines, ignored templates).</summary>
public sealed record TrainingData(IReadOnlyList<TrainingExample> Examples, IReadOnlyList<string> Warnings);
