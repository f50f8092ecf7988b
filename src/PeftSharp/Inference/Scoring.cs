using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Inference;

/// <summary>Result of scoring a token sequence: how many tokens were predicted and their mean negative log-likelihood.</summary>
public readonly record struct NllResult(long Tokens, double TotalNll)
{
    /// <summary>Mean negative log-likelihood per predicted token, in nats (NaN when no token was predicted).</summary>
    public double MeanNll => Tokens == 0 ? double.NaN : TotalNll / Tokens;
    /// <summary>exp(<see cref="MeanNll"/>).</summary>
    public double Perplexity => Math.Exp(MeanNll);
}

/// <summary>
/// Mean next-token negative log-likelihood. Every token after the first is predicted once, from the tokens
/// before it: a sequence longer than the window is cut into windows of <c>window</c> tokens that overlap by
/// one (window k starts at k·(window−1)), so each window predicts its tokens 2..n from the ones before it.
/// With virtual tokens in front (prompt tuning, P-tuning) the first token is predicted too, from the last virtual
/// token, as PEFT's loss with labels counts it (its labels are −100 for the virtual tokens only).
/// </summary>
public static class Scoring
{
    /// <summary>Positions whose log-softmax is computed at once: bounds the float32 logits held in memory.</summary>
    const long ChunkPositions = 256;

    /// <summary>
    /// Scores <paramref name="ids"/> in windows of <paramref name="window"/> tokens (default: the model's attention span less any virtual tokens); <paramref name="progress"/> gets (tokens done, tokens total).
    /// </summary>
    /// <exception cref="PeftSharpException">The window is under 2 tokens.</exception>
    public static NllResult MeanNll(CausalLM model, IReadOnlyList<int> ids, int? window = null, Action<long, long>? progress = null)
    {
        // Virtual tokens and key/value prefixes take positions in front of every window.
        int front = model.Extensions.VirtualTokens + model.Extensions.PrefixLength;
        int span = model.Config.AttentionSpan - front;
        int w = window ?? span;
        if (w < 2) throw new PeftSharpException($"--context: window must be at least 2 tokens, got {w}");
        if (w > span)
            throw new PeftSharpException(front == 0
                ? $"--context: window {w} exceeds the model's context of {model.Config.AttentionSpan} tokens"
                : $"--context: window {w} exceeds the model's context of {model.Config.AttentionSpan} tokens less the adapter's {front} virtual/prefix positions");
        double total = 0;
        long count = 0;
        using var _ = no_grad();
        for (long start = 0; start + 1 < ids.Count; start += w - 1)
        {
            int len = (int)Math.Min(w, ids.Count - start);
            var window_ = new long[len];
            for (int i = 0; i < len; i++) window_[i] = ids[(int)(start + i)];
            bool leading = start == 0 && model.Extensions.VirtualTokens > 0;
            total += WindowNll(model, window_, leading);
            count += len - 1 + (leading ? 1 : 0);
            progress?.Invoke(start + len, ids.Count);
        }
        return new NllResult(count, total);
    }

    /// <summary>Sum of −log p(token[t+1] | tokens[..t]) over one window (and of −log p(token[0] | virtual tokens) when <paramref name="leading"/>).</summary>
    static double WindowNll(CausalLM model, long[] window, bool leading = false)
    {
        using var scope = NewDisposeScope();
        var input = tensor(window, device: model.Device).unsqueeze(0);
        var lastVirtual = leading ? new LastVirtualTap(model.Extensions.VirtualTokens) : null;
        Tensor hidden;
        using (lastVirtual is null ? null : model.Extensions.AddHiddenStateTap(lastVirtual))
            hidden = model.Hidden(input)[0]; // [T, hidden]
        var targets = tensor(window[1..], device: model.Device);
        double sum = 0;
        if (lastVirtual?.Hidden is { } h)
        {
            var logProbs = model.Logits(h).to_type(ScalarType.Float32).log_softmax(-1);
            sum -= logProbs[0, window[0]].to_type(ScalarType.Float64).item<double>();
            h.Dispose();
        }
        for (long s = 0; s < window.Length - 1; s += ChunkPositions)
        {
            using var chunkScope = NewDisposeScope();
            long n = Math.Min(ChunkPositions, window.Length - 1 - s);
            var logits = model.Logits(hidden.narrow(0, s, n)).to_type(ScalarType.Float32);
            var logProbs = logits.log_softmax(-1);
            var picked = logProbs.gather(1, targets.narrow(0, s, n).unsqueeze(1));
            sum -= picked.to_type(ScalarType.Float64).sum().item<double>();
        }
        return sum;
    }

    /// <summary>Keeps the final hidden state of the last virtual token ([1, hidden]), which the model drops from its output.</summary>
    sealed class LastVirtualTap(int virtualTokens) : IHiddenStateTap
    {
        public Tensor? Hidden { get; private set; }
        public void Observe(int layer, Tensor hidden) { }
        public Tensor Final(Tensor hidden)
        {
            // The model's dispose scope ends before scoring reads it: keep a copy outside it (the caller disposes it).
            Hidden = hidden[0].narrow(0, virtualTokens - 1, 1).detach().clone().DetachFromDisposeScope();
            return hidden;
        }
    }
}
