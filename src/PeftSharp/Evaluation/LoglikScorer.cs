using PeftSharp.Models;
using PeftSharp.Tokenization;
using static TorchSharp.torch;

namespace PeftSharp.Evaluation;

/// <summary>
/// lm-evaluation-harness's loglikelihood request: for a context and each continuation, the sum of
/// log p(continuation token | everything before it). The context is encoded with the tokenizer's special tokens,
/// each continuation on its own without them and appended (an empty context becomes the EOS token, as the harness
/// does). The context runs through the model once; its KV cache is shared by all continuations, which run as one batch.
/// </summary>
public sealed class LoglikScorer(CausalLM model, ModelTokenizer? tokenizer)
{
    /// <summary>The summed log-likelihood of each continuation after the context.</summary>
    public double[] Score(string context, IReadOnlyList<string> continuations)
    {
        var (ctx, conts) = Encode(context, continuations);
        return ScoreIds(ctx, conts);
    }

    /// <summary>The same for token ids: context (at least one token) and continuations (each at least one token).</summary>
    public double[] ScoreIds(long[] ctx, long[][] conts)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var cache = model.NewCache();
        var hidden = model.Hidden(tensor(ctx, device: model.Device).unsqueeze(0), cache);
        var first = LogSoftmax(hidden[0, -1]); // predicts each continuation's first token
        var firstIds = tensor(conts.Select(c => c[0]).ToArray(), device: model.Device);
        var scores = first.gather(0, firstIds);
        int longest = conts.Max(c => c.Length);
        if (longest > 1)
        {
            // Feed tokens 0..n−2 of every continuation (right-padded: causal attention keeps padding out of real
            // positions) and read the log-probabilities of tokens 1..n−1.
            int rows = conts.Length, width = longest - 1;
            var input = new long[rows * width];
            var targets = new long[rows * width];
            var mask = new float[rows * width];
            for (int r = 0; r < rows; r++)
                for (int j = 0; j + 1 < conts[r].Length; j++)
                {
                    input[r * width + j] = conts[r][j];
                    targets[r * width + j] = conts[r][j + 1];
                    mask[r * width + j] = 1;
                }
            using var shared = cache.RepeatRows(rows);
            var h = model.Hidden(tensor(input, device: model.Device).view(rows, width), shared);
            var logProbs = LogSoftmax(h);
            var picked = logProbs.gather(2, tensor(targets, device: model.Device).view(rows, width, 1)).squeeze(2);
            scores = scores.add(picked.mul(tensor(mask, device: model.Device).view(rows, width)).sum(1));
        }
        return scores.to_type(ScalarType.Float64).cpu().data<double>().ToArray();
    }

    /// <summary>The same scores the plain way: one full forward over context + continuation per choice (the benchmark's baseline).</summary>
    public double[] ScoreNaive(string context, IReadOnlyList<string> continuations)
    {
        var (ctx, conts) = Encode(context, continuations);
        return ScoreIdsNaive(ctx, conts);
    }

    /// <summary><see cref="ScoreNaive(string, IReadOnlyList{string})"/> for token ids.</summary>
    public double[] ScoreIdsNaive(long[] ctx, long[][] conts)
    {
        using var _ = no_grad();
        var result = new double[conts.Length];
        for (int i = 0; i < conts.Length; i++)
        {
            using var scope = NewDisposeScope();
            long[] whole = [.. ctx, .. conts[i]];
            var h = model.Hidden(tensor(whole, device: model.Device).unsqueeze(0))[0];
            var logProbs = LogSoftmax(h.narrow(0, ctx.Length - 1, conts[i].Length));
            var targets = tensor(conts[i], device: model.Device).unsqueeze(1);
            result[i] = logProbs.gather(1, targets).to_type(ScalarType.Float64).sum().item<double>();
        }
        return result;
    }

    Tensor LogSoftmax(Tensor hidden) => model.Logits(hidden).to_type(ScalarType.Float32).log_softmax(-1);

    (long[] Context, long[][] Continuations) Encode(string context, IReadOnlyList<string> continuations)
    {
        if (continuations.Count == 0) throw new ArgumentException("no continuations to score", nameof(continuations));
        if (tokenizer is null) throw new InvalidOperationException("scoring text needs a tokenizer; this scorer was made for token ids");
        var ctx = tokenizer.Encode(context, addSpecialTokens: true).Select(i => (long)i).ToList();
        if (ctx.Count == 0)
        {
            int eos = tokenizer.EosTokenId ?? model.Config.EosTokenIds.FirstOrDefault(-1);
            if (eos < 0) throw new PeftSharpException("loglik: the context encodes to no tokens and the tokenizer has no EOS token to stand in");
            ctx.Add(eos);
        }
        var conts = new long[continuations.Count][];
        for (int i = 0; i < conts.Length; i++)
        {
            conts[i] = tokenizer.Encode(continuations[i], addSpecialTokens: false).Select(t => (long)t).ToArray();
            if (conts[i].Length == 0) throw new PeftSharpException($"loglik: choice {i + 1} (\"{continuations[i]}\") encodes to no tokens");
        }
        // As the harness: keep the last tokens when context + continuation exceed the model's window.
        int limit = model.Config.AttentionSpan - model.Extensions.LeadingPositions; // soft prompts take positions in front
        int longest = conts.Max(c => c.Length);
        if (longest >= limit) throw new PeftSharpException($"loglik: a choice of {longest} tokens leaves no room for context in the model's {limit}");
        if (ctx.Count + longest > limit) ctx.RemoveRange(0, ctx.Count + longest - limit);
        return ([.. ctx], conts);
    }
}
