using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>The mean token loss of a model over labelled examples (no gradients, eval mode, token-weighted).</summary>
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
                var batch = Batch.Collate(examples.Skip(start).Take(batchSize).ToList(), padTokenId, model.Device);
                if (batch.LabelledTokens == 0) continue;
                var hidden = model.Hidden(batch.InputIds, null, batch.ModelMask);
                var (lossSum, n) = CausalLMLoss.Sum(model, hidden, batch.Labels, lossChunkSize);
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
