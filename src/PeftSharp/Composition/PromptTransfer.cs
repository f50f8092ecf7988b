using PeftSharp.Peft;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Composition;

/// <summary>How <see cref="PromptTransfer.Similarity"/> compares two prompts.</summary>
public enum PromptSimilarityMetric
{
    /// <summary>SPoT's "cosine similarity of average tokens": cos(mean of A's rows, mean of B's rows) (the default).</summary>
    Mean,
    /// <summary>SPoT's "per-token average cosine similarity": the mean of cos(aᵢ, bⱼ) over every pair of rows.</summary>
    PerToken,
    /// <summary>The cosine of the flattened prompts (both of one shape).</summary>
    Flat,
}

/// <summary>
/// SPoT (Vu et al. 2022), soft prompt transfer: a prompt trained on a source task initialises the target task's
/// prompt, and candidate sources are ranked by the similarity of their prompts to a prompt briefly trained on the
/// target task (the paper's task embeddings). Prompts are read from PEFT soft-prompt folders
/// (<c>prompt_embeddings</c> of PROMPT_TUNING, P_TUNING or MULTITASK_PROMPT_TUNING adapters, [N, token_dim]).
/// </summary>
public static class PromptTransfer
{
    /// <summary>The soft-prompt types whose <c>prompt_embeddings</c> are [N, token_dim] virtual tokens.</summary>
    public static IReadOnlyList<string> PromptTypes { get; } = ["PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING"];

    /// <summary>The prompt of a soft-prompt adapter folder, [N, token_dim] float32 on the CPU.</summary>
    /// <exception cref="PeftSharpException">Not a folder of one of <see cref="PromptTypes"/>, or no <c>prompt_embeddings</c>.</exception>
    public static Tensor ReadPrompt(string dir)
    {
        string type = PeftConfig.ReadPeftType(dir);
        if (!PromptTypes.Contains(type))
            throw new PeftSharpException($"{dir}: a {type} adapter has no virtual-token prompt; expected one of {string.Join(", ", PromptTypes)}");
        string weights = AdapterFiles.WeightsPath(dir);
        using var file = SafetensorsFile.Open(weights);
        if (!file.Tensors.TryGetValue("prompt_embeddings", out var info))
            throw new PeftSharpException($"{weights}: missing tensor 'prompt_embeddings'");
        if (info.Shape.Length != 2)
            throw new PeftSharpException($"{weights}: tensor 'prompt_embeddings' has shape [{string.Join(", ", info.Shape)}]; expected [num_virtual_tokens, token_dim]");
        return file.Read("prompt_embeddings", CPU, ScalarType.Float32);
    }

    /// <summary>The similarity of two prompts [N, D] and [M, D] (<see cref="PromptSimilarityMetric"/>), in float64.</summary>
    public static double Similarity(Tensor a, Tensor b, PromptSimilarityMetric metric = PromptSimilarityMetric.Mean)
    {
        if (a.shape[1] != b.shape[1])
            throw new PeftSharpException($"prompts of width {a.shape[1]} and {b.shape[1]} cannot be compared (different token_dim: another base model?)");
        using var scope = NewDisposeScope();
        var x = a.to(ScalarType.Float64);
        var y = b.to(ScalarType.Float64);
        switch (metric)
        {
            case PromptSimilarityMetric.Mean:
                return Cosine(x.mean([0L]), y.mean([0L]));
            case PromptSimilarityMetric.PerToken:
                var xn = x.div(x.norm(1, keepdim: true));
                var yn = y.div(y.norm(1, keepdim: true));
                return xn.matmul(yn.t()).mean().item<double>();
            default:
                if (!a.shape.SequenceEqual(b.shape))
                    throw new PeftSharpException($"flat similarity needs prompts of one shape, got [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}] (use the mean metric)");
                return Cosine(x.flatten(), y.flatten());
        }
    }

    static double Cosine(Tensor u, Tensor v) => u.dot(v).item<double>() / (u.norm().item<double>() * v.norm().item<double>());

    /// <summary>One candidate source and its similarity to the target.</summary>
    public sealed record Candidate(string Source, double Similarity);

    /// <summary>The <paramref name="sources"/> folders ranked by the similarity of their prompts to <paramref name="target"/>'s, most similar first.</summary>
    public static IReadOnlyList<Candidate> Rank(IReadOnlyList<string> sources, string target, PromptSimilarityMetric metric = PromptSimilarityMetric.Mean)
    {
        using var t = ReadPrompt(target);
        var result = new List<Candidate>();
        foreach (var source in sources)
        {
            using var s = ReadPrompt(source);
            double sim;
            try { sim = Similarity(s, t, metric); }
            catch (PeftSharpException e) { throw new PeftSharpException($"{source} vs {target}: {e.Message}"); }
            result.Add(new Candidate(source, sim));
        }
        return result.OrderByDescending(c => c.Similarity).ToList();
    }

    /// <summary>
    /// SPoT's transfer: copies the prompt of the adapter folder <paramref name="sourceDir"/> into <paramref name="prompt"/>
    /// (a new adapter's <c>embedding.weight</c>, [N, token_dim]; the source needs the same N and token_dim).
    /// </summary>
    public static void InitFromPrompt(Tensor prompt, string sourceDir)
    {
        using var source = ReadPrompt(sourceDir);
        if (!source.shape.SequenceEqual(prompt.shape))
            throw new PeftSharpException(
                $"{sourceDir}: its prompt is [{string.Join(", ", source.shape)}] but the new one is [{string.Join(", ", prompt.shape)}] (num_virtual_tokens × token_dim must match)");
        using var _ = no_grad();
        prompt.copy_(source.to(prompt.dtype, prompt.device));
    }
}
