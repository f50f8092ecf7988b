using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// Causal-LM cross-entropy as transformers computes it: the hidden state at position t predicts label t+1,
/// labels equal to <see cref="IgnoreIndex"/> (prompt tokens, padding) carry no loss, and the loss is the mean
/// over the remaining tokens.
/// </summary>
/// <remarks>
/// Full-vocabulary float32 logits are the largest activation of a small-adapter fine-tune (B·T·V floats: 1 GiB
/// for 4×1024 tokens of a 64k vocabulary), so they are never built for the whole batch. Only the positions that
/// carry a label are kept, and they go through <see cref="CausalLM.Logits"/> and the fp32 cross-entropy a chunk
/// at a time. <see cref="Backward"/> also runs the backward pass chunk by chunk, so at most one chunk of logits
/// and its gradient exist at once.
/// </remarks>
public static class CausalLMLoss
{
    /// <summary>The label that carries no loss (PyTorch's and transformers' convention).</summary>
    public const long IgnoreIndex = -100;

    /// <summary>Positions per chunk by default: 2048 × a 128k vocabulary is 1 GiB of float32 logits.</summary>
    public const int DefaultChunkSize = 2048;

    /// <summary>
    /// Sum of the token losses (a float32 scalar that autograd can differentiate) and the number of tokens
    /// that carry a label. Under autograd each chunk's logits stay alive until backward; use <see cref="Backward"/>
    /// to train, this to evaluate (under <c>no_grad</c>) and to compare.
    /// </summary>
    /// <param name="hidden">Final hidden states [B, T, H] from <see cref="CausalLM.Hidden"/>.</param>
    /// <param name="labels">Labels [B, T] (int64), not yet shifted; <see cref="IgnoreIndex"/> where no loss is wanted.</param>
    public static (Tensor Sum, long Count) Sum(CausalLM model, Tensor hidden, Tensor labels, int chunkSize = DefaultChunkSize)
    {
        CheckChunk(chunkSize);
        using var scope = NewDisposeScope();
        var (positions, targets) = LabelledPositions(hidden, labels);
        long n = targets.shape[0];
        var sum = zeros([], ScalarType.Float32, hidden.device);
        for (long start = 0; start < n; start += chunkSize)
        {
            long len = Math.Min(chunkSize, n - start);
            sum = sum.add(ChunkLoss(model, positions.narrow(0, start, len), targets.narrow(0, start, len)));
        }
        return (sum.MoveToOuterDisposeScope(), n);
    }

    /// <summary>The mean token loss (NaN when no token carries a label, as torch's mean of nothing).</summary>
    public static Tensor Mean(CausalLM model, Tensor hidden, Tensor labels, int chunkSize = DefaultChunkSize)
    {
        var (sum, count) = Sum(model, hidden, labels, chunkSize);
        using (sum) return sum.div(count == 0 ? double.NaN : count);
    }

    /// <summary>
    /// Back-propagates <c>scale × (sum of the token losses)</c> into every parameter that requires a gradient
    /// (gradients accumulate, as <c>loss.backward()</c> does) and returns the unscaled sum.
    /// </summary>
    /// <remarks>
    /// The hidden states are cut from the graph; each chunk's logits and loss are built from a detached copy and
    /// back-propagated at once, which frees that chunk's logits; the collected gradients with respect to the
    /// hidden states are then sent through the rest of the model in one backward call. The result is the same
    /// gradient as one backward through the whole loss. Parameters of <see cref="CausalLM.Logits"/> (a trainable
    /// or adapted lm_head) receive their gradient from the chunk passes.
    /// </remarks>
    /// <param name="scale">Typically 1 / (labelled tokens in the whole accumulated batch).</param>
    public static double Backward(CausalLM model, Tensor hidden, Tensor labels, double scale, int chunkSize = DefaultChunkSize)
    {
        CheckChunk(chunkSize);
        using var scope = NewDisposeScope();
        var (positions, targets) = LabelledPositions(hidden, labels);
        long n = targets.shape[0];
        double total = 0;
        var gradients = new List<Tensor>();
        for (long start = 0; start < n; start += chunkSize)
        {
            using var chunkScope = NewDisposeScope();
            long len = Math.Min(chunkSize, n - start);
            var piece = positions.narrow(0, start, len).detach().requires_grad_(positions.requires_grad);
            var loss = ChunkLoss(model, piece, targets.narrow(0, start, len));
            total += loss.item<float>();
            if (loss.requires_grad) loss.mul(scale).backward();
            if (positions.requires_grad) gradients.Add(piece.grad!.MoveToOuterDisposeScope());
        }
        // Nothing before the output projection is trainable (or nothing is labelled): the chunks did all the work.
        if (positions.requires_grad && gradients.Count > 0)
            positions.backward([cat(gradients, 0)]);
        return total;
    }

    /// <summary>Counts the labels that carry loss after the shift: labels[:, 1:] ≠ <see cref="IgnoreIndex"/>.</summary>
    public static long CountLabelled(ReadOnlySpan<int> labels)
    {
        long count = 0;
        for (int t = 1; t < labels.Length; t++)
            if (labels[t] != IgnoreIndex) count++;
        return count;
    }

    /// <summary>Hidden rows [N, H] and their targets [N] for the N shifted positions that carry a label.</summary>
    static (Tensor Positions, Tensor Targets) LabelledPositions(Tensor hidden, Tensor labels)
    {
        if (hidden.dim() != 3 || labels.dim() != 2 || hidden.shape[0] != labels.shape[0] || hidden.shape[1] != labels.shape[1])
            throw new ArgumentException($"expected hidden [B, T, H] and labels [B, T], got [{string.Join(", ", hidden.shape)}] and [{string.Join(", ", labels.shape)}]");
        long t = hidden.shape[1], h = hidden.shape[2];
        // Position t predicts label t + 1: drop the last hidden state and the first label.
        var shiftedHidden = hidden.narrow(1, 0, Math.Max(t - 1, 0)).reshape(-1, h);
        var shiftedLabels = labels.narrow(1, Math.Min(1, t), Math.Max(t - 1, 0)).reshape(-1).to(hidden.device);
        var keep = shiftedLabels.ne(IgnoreIndex).nonzero().squeeze(1);
        return (shiftedHidden.index_select(0, keep), shiftedLabels.index_select(0, keep));
    }

    /// <summary>Summed fp32 cross-entropy of one chunk; the logits are projected in the model's dtype and upcast, as transformers does.</summary>
    static Tensor ChunkLoss(CausalLM model, Tensor positions, Tensor targets)
    {
        using var scope = NewDisposeScope();
        var logits = model.Logits(positions).to_type(ScalarType.Float32);
        return nn.functional.cross_entropy(logits, targets, reduction: nn.Reduction.Sum).MoveToOuterDisposeScope();
    }

    static void CheckChunk(int chunkSize)
    {
        if (chunkSize < 1) throw new ArgumentOutOfRangeException(nameof(chunkSize), chunkSize, "chunk size must be at least 1");
    }
}
