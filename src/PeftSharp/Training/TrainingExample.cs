namespace PeftSharp.Training;

/// <summary>
/// One training sequence: token ids and their labels, not yet shifted (the loss shifts: position t predicts
/// label t+1). A label of <see cref="CausalLMLoss.IgnoreIndex"/> (−100) carries no loss.
/// </summary>
public sealed record TrainingExample
{
    public TrainingExample(int[] inputIds, int[] labels)
    {
        if (inputIds.Length != labels.Length)
            throw new ArgumentException($"{inputIds.Length} input ids but {labels.Length} labels", nameof(labels));
        if (inputIds.Length == 0) throw new ArgumentException("an example needs at least one token", nameof(inputIds));
        InputIds = inputIds;
        Labels = labels;
    }

    public int[] InputIds { get; }
    public int[] Labels { get; }
    public int Length => InputIds.Length;

    /// <summary>Tokens that carry loss after the shift.</summary>
    public long LabelledTokens => CausalLMLoss.CountLabelled(Labels);
}

/// <summary>Examples to train on, plus what the loader wants the user to know (dropped lines, ignored templates).</summary>
public sealed record TrainingData(IReadOnlyList<TrainingExample> Examples, IReadOnlyList<string> Warnings);
