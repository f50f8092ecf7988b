using PeftSharp.Tokenization;

namespace PeftSharp.Training;

/// <summary>Loads a training or validation file by its kind, and splits off validation examples.</summary>
public static class DataFiles
{
    /// <summary>
    /// A <c>.jsonl</c> file is read by <see cref="InstructionData.LoadJsonl"/> (instruction, chat or text records);
    /// anything else is plain UTF-8 text packed by <see cref="TextData.LoadFile"/>. <paramref name="maxLength"/> is
    /// the block size for text and the cut-off length for instruction examples.
    /// </summary>
    public static TrainingData Load(string path, ModelTokenizer tokenizer, int maxLength) =>
        Path.GetExtension(path).Equals(".jsonl", StringComparison.OrdinalIgnoreCase)
            ? InstructionData.LoadJsonl(path, tokenizer, maxLength)
            : TextData.LoadFile(path, tokenizer, maxLength);

    /// <summary>
    /// Holds out round(fraction × count) examples (at least one) for validation, chosen by a seeded shuffle;
    /// both parts keep the original order. Needs at least one example left to train on.
    /// </summary>
    /// <exception cref="PeftSharpException">The fraction is not in (0, 1), or too few examples to split.</exception>
    public static (IReadOnlyList<TrainingExample> Train, IReadOnlyList<TrainingExample> Validation) Split(
        IReadOnlyList<TrainingExample> examples, double fraction, ulong seed)
    {
        if (!(fraction > 0 && fraction < 1)) throw new PeftSharpException($"validation fraction must be between 0 and 1, got {fraction}");
        int held = Math.Max(1, (int)Math.Round(fraction * examples.Count));
        if (held >= examples.Count)
            throw new PeftSharpException($"cannot hold out {held} of {examples.Count} examples for validation and still train; give more data or a validation file");
        var heldOut = new HashSet<int>(SeededShuffle.Permutation(examples.Count, seed).Take(held));
        var train = new List<TrainingExample>();
        var validation = new List<TrainingExample>();
        for (int i = 0; i < examples.Count; i++) (heldOut.Contains(i) ? validation : train).Add(examples[i]);
        return (train, validation);
    }
}
