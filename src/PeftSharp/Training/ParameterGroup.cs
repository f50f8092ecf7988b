using PeftSharp.Models;
using TorchSharp.Modules;

namespace PeftSharp.Training;

/// <summary>
/// Parameters trained with one learning rate and weight decay (torch.optim's param group). Names identify the
/// parameters in checkpoints (<c>trainable.safetensors</c>, <c>optimizer.safetensors</c>), so they must be unique
/// across all groups; the model's <c>named_parameters()</c> names are the natural choice.
/// </summary>
public sealed record ParameterGroup(IReadOnlyList<(string Name, Parameter Param)> Parameters, double LearningRate, double WeightDecay);

/// <summary>Helpers that build <see cref="ParameterGroup"/>s.</summary>
public static class ParameterGroups
{
    /// <summary>The model's parameters with <c>requires_grad</c> set, by their <c>named_parameters()</c> names.</summary>
    public static List<(string Name, Parameter Param)> Trainable(CausalLM model) =>
        model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();

    /// <summary>
    /// nanoGPT's and transformers' split: matrices and embeddings (dim ≥ 2) decay, biases and norm weights
    /// (dim &lt; 2) do not. Empty groups are left out.
    /// </summary>
    public static List<ParameterGroup> DecayAndNoDecay(IEnumerable<(string Name, Parameter Param)> parameters, double learningRate, double weightDecay)
    {
        var all = parameters.ToList();
        var decay = all.Where(p => p.Param.dim() >= 2).ToList();
        var noDecay = all.Where(p => p.Param.dim() < 2).ToList();
        var groups = new List<ParameterGroup>();
        if (decay.Count > 0) groups.Add(new ParameterGroup(decay, learningRate, weightDecay));
        if (noDecay.Count > 0) groups.Add(new ParameterGroup(noDecay, learningRate, 0.0));
        return groups;
    }

    /// <summary>Every parameter of the groups, checking that names are unique.</summary>
    internal static List<(string Name, Parameter Param)> All(IReadOnlyList<ParameterGroup> groups)
    {
        var all = groups.SelectMany(g => g.Parameters).ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, _) in all)
            if (!seen.Add(name)) throw new ArgumentException($"parameter name '{name}' appears twice in the parameter groups", nameof(groups));
        return all;
    }
}
