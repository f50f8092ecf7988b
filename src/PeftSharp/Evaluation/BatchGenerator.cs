using PeftSharp.Models;
using PeftSharp.Tokenization;
using static TorchSharp.torch;

namespace PeftSharp.Evaluation;

/// <summary>
/// Greedy generation for a batch of prompts: the prompts are left-padded to one length (padding masked out of
/// attention, GPT-2 positions counted from each row's first real token), run once, then one token per step for all
/// rows with a shared KV cache. A row stops at EOS; the batch stops when every row has, after
/// <c>maxNewTokens</c>, or at the model's context length.
/// </summary>
public sealed class BatchGenerator(CausalLM model, ModelTokenizer tokenizer)
{
    /// <summary>The generated text of each prompt (special tokens skipped), in prompt order.</summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, int maxNewTokens)
    {
        var ids = prompts.Select(p => tokenizer.Encode(p, addSpecialTokens: true).Select(i => (long)i).ToArray()).ToList();
        return GenerateIds(ids, maxNewTokens).Select(g => tokenizer.Decode(g, skipSpecialTokens: true)).ToList();
    }

    public IReadOnlyList<List<int>> GenerateIds(IReadOnlyList<long[]> prompts, int maxNewTokens)
    {
        int rows = prompts.Count;
        var generated = Enumerable.Range(0, rows).Select(_ => new List<int>()).ToList();
        if (rows == 0) return generated;
        int limit = model.TokenContext; // less the positions soft prompts take in front
        for (int r = 0; r < rows; r++)
        {
            if (prompts[r].Length == 0) throw new PeftSharpException($"generate: prompt {r + 1} encodes to no tokens");
            if (prompts[r].Length >= limit) throw new PeftSharpException($"generate: a prompt of {prompts[r].Length} tokens leaves no room in the model's context of {limit}");
        }
        var stop = new HashSet<long>(model.Config.EosTokenIds.Select(i => (long)i));
        if (tokenizer.EosTokenId is int eos) stop.Add(eos);
        long pad = tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;
        int width = prompts.Max(p => p.Length);
        var padding = prompts.Select(p => (long)(width - p.Length)).ToArray();
        var input = new long[rows * width];
        var maskValues = new long[rows * width];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < width; j++)
            {
                int k = j - (int)padding[r];
                input[r * width + j] = k >= 0 ? prompts[r][k] : pad;
                maskValues[r * width + j] = k >= 0 ? 1 : 0;
            }
        var done = new bool[rows];
        using var _ = no_grad();
        using var cache = model.NewCache();
        cache.LeftPadding = padding.Any(p => p > 0) ? padding : null;
        var mask = tensor(maskValues, device: model.Device).view(rows, width);
        mask.DetachFromDisposeScope();
        var step = tensor(input, device: model.Device).view(rows, width);
        step.DetachFromDisposeScope();
        try
        {
            for (int n = 0; n < maxNewTokens && width + n < limit; n++)
            {
                long[] next;
                using (var scope = NewDisposeScope())
                {
                    var hidden = model.Hidden(step, cache, cache.LeftPadding is null ? null : mask);
                    var last = hidden.select(1, -1);
                    next = model.Logits(last).to_type(ScalarType.Float32).argmax(-1).cpu().data<long>().ToArray();
                }
                for (int r = 0; r < rows; r++)
                {
                    if (done[r]) { next[r] = pad; continue; }
                    if (stop.Contains(next[r])) done[r] = true;
                    else generated[r].Add((int)next[r]);
                }
                if (done.All(d => d)) break;
                var newStep = tensor(next, device: model.Device).view(rows, 1);
                var newMask = cat([mask, ones(rows, 1, ScalarType.Int64, model.Device)], 1);
                step.Dispose(); mask.Dispose();
                step = newStep; mask = newMask;
                step.DetachFromDisposeScope(); mask.DetachFromDisposeScope();
            }
        }
        finally
        {
            step.Dispose();
            mask.Dispose();
        }
        return generated;
    }
}
