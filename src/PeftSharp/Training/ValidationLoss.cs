using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>The mean token loss of a model over labelled examples (no gradients, eval mode, token-weighted; virtual tokens as <see cref="VirtualTokenLoss"/>).</summary>
public static class ValidationLoss
{
    /// <summary>Mean cross-entropy over every labelled token of <paramref name="examples"/>, in batches; NaN when none is labelled.</summary>
    public static double Mean(CausalLM model, IReadOnlyList<TrainingExample> examples, long padTokenId, int batchSize,
                              int lossChunkSize = CausalLMLoss.DefaultChunkSize)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize));
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            double sum = 0;
            long count = 0;
            for (int start = 0; start < examples.Count; start += batchSize)
            {
                using var scope = NewDisposeScope();
                var part = examples.Skip(start).Take(batchSize).ToList();
                if (part.Sum(e => VirtualTokenLoss.Labelled(model, e)) == 0) continue;
                var batch = Batch.Collate(part, padTokenId, model.Device);
                // With virtual tokens label 0 is scored from the last virtual token, as PEFT's loss with labels.
                var (hidden, labels) = VirtualTokenLoss.Forward(model, batch);
                var (lossSum, n) = CausalLMLoss.Sum(model, hidden, labels, lossChunkSize);
                sum += lossSum.item<float>();
                count += n;
            }
            return count == 0 ? double.NaN : sum / count;
        }
        finally
        {
            model.train(wasTraining);
        }
    }
}
