using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// PEFT's loss with labels for prompt tuning and P-tuning (virtual tokens in front of the sequence, extension point 4):
/// PEFT prefixes the labels with N × −100, so the virtual positions carry no loss and the shifted loss predicts the
/// first real token from the last virtual token. The model drops the virtual positions from its output; this keeps the
/// last one (through a hidden-state tap, with its gradient) and puts it in front of the hidden states, with a −100 label
/// in front of the labels, so that <see cref="CausalLMLoss"/> scores label 0 from it. Without virtual tokens (no prompt,
/// or prefix tuning, whose real tokens follow cache entries only, as PEFT passes the labels unchanged) nothing changes.
/// </summary>
public static class VirtualTokenLoss
{
    /// <summary>Tokens of <paramref name="example"/> that carry loss on <paramref name="model"/> as it is now (label 0 too with virtual tokens).</summary>
    public static long Labelled(CausalLM model, TrainingExample example) =>
        example.LabelledTokens + (model.Extensions.VirtualTokens > 0 && example.Labels[0] != CausalLMLoss.IgnoreIndex ? 1 : 0);

    /// <summary>
    /// The forward for the loss: final hidden states [B, T', H] and labels [B, T'] (unshifted) for <see cref="CausalLMLoss"/>;
    /// T' = T + 1 with virtual tokens (the last virtual position and a −100 label in front), else T. Tensors are
    /// created in the caller's dispose scope.
    /// </summary>
    public static (Tensor Hidden, Tensor Labels) Forward(CausalLM model, Batch batch)
    {
        using var tasks = model.Extensions.UseTaskIds(batch.TaskIds);
        int virtualTokens = model.Extensions.VirtualTokens;
        if (virtualTokens == 0) return (model.Hidden(batch.InputIds, null, batch.ModelMask), batch.Labels);
        var tap = new LastVirtualTap(virtualTokens);
        Tensor hidden;
        using (model.Extensions.AddHiddenStateTap(tap)) hidden = model.Hidden(batch.InputIds, null, batch.ModelMask);
        using var last = tap.Take();
        var labels = batch.Labels.to(hidden.device);
        using var ignore = full([labels.shape[0], 1], CausalLMLoss.IgnoreIndex, labels.dtype, labels.device);
        return (cat([last, hidden], 1), cat([ignore, labels], 1));
    }

    /// <summary>Keeps the final hidden state of the last virtual token [B, 1, H] (still in the autograd graph).</summary>
    sealed class LastVirtualTap(int virtualTokens) : IHiddenStateTap
    {
        Tensor? kept;

        public void Observe(int layer, Tensor hidden) { }

        public Tensor Final(Tensor hidden)
        {
            kept?.Dispose();
            // The model's dispose scope ends before the caller reads it: keep it outside (Take hands it over).
            kept = hidden.narrow(1, virtualTokens - 1, 1).DetachFromDisposeScope();
            return hidden;
        }

        public Tensor Take()
        {
            var t = kept ?? throw new InvalidOperationException("the model ran no forward with virtual tokens");
            kept = null;
            return t;
        }
    }
}
