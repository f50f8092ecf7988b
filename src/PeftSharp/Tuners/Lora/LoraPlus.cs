using TorchSharp.Modules;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// LoRA+ (Hayou et al., 2024): B learns faster than A. Splits the trainable parameters into optimizer groups with
/// lr_B = ratio·lr, as PEFT's create_loraplus_optimizer: B factors and every 1-D parameter go to the fast groups
/// (biases without weight decay), embedding factors get their own lr (default 1e-6), everything else the base lr.
/// </summary>
public static class LoraPlus
{
    /// <summary>One optimizer parameter group.</summary>
    /// <param name="Name">The group's name (for logs).</param>
    /// <param name="Parameters">Its parameters with their names.</param>
    /// <param name="LearningRate">Its learning rate.</param>
    /// <param name="WeightDecay">Its weight decay.</param>
    public sealed record Group(string Name, IReadOnlyList<(string Name, Parameter Param)> Parameters, double LearningRate, double WeightDecay);

    /// <summary>
    /// The LoRA+ groups of <paramref name="lora"/>'s trainable parameters: <paramref name="learningRate"/> for A, <paramref name="ratio"/>·lr for B and 1-D parameters (biases without weight decay), <paramref name="embeddingLearningRate"/> (default 1e-6) for embedding factors; empty groups are left out.
    /// </summary>
    public static IReadOnlyList<Group> Groups(LoraModel lora, double learningRate, double ratio, double weightDecay = 0.0, double? embeddingLearningRate = null)
    {
        var groupA = new List<(string, Parameter)>();
        var groupB = new List<(string, Parameter)>();
        var groupBNoDecay = new List<(string, Parameter)>();
        var groupEmbedding = new List<(string, Parameter)>();
        foreach (var (name, p) in lora.TrainableParameters())
        {
            if (name.Contains(".lora_embedding_")) groupEmbedding.Add((name, p));
            else if (name.Contains(".lora_B.") || p.dim() == 1) (name.EndsWith(".bias") ? groupBNoDecay : groupB).Add((name, p));
            else groupA.Add((name, p));
        }
        var groups = new List<Group>
        {
            new("groupA", groupA, learningRate, weightDecay),
            new("groupB", groupB, learningRate * ratio, weightDecay),
            new("groupB_no_decay", groupBNoDecay, learningRate * ratio, 0.0),
            new("embedding", groupEmbedding, embeddingLearningRate ?? 1e-6, weightDecay),
        };
        return groups.Where(g => g.Parameters.Count > 0).ToList();
    }
}
