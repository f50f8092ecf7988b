using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Privacy;

/// <summary>
/// DP-SGD's loss: each example's own mean token loss, summed over the batch, so that example n's gradient is the
/// gradient of its mean loss alone (what is clipped). Labels are shifted and masked as in <see cref="CausalLMLoss"/>.
/// </summary>
public static class PerExampleLoss
{
    /// <summary>
    /// Back-propagates Σ_n mean_t nll(n, t) and returns each example's mean loss (NaN for an example with no labelled
    /// token, which then contributes nothing).
    /// </summary>
    /// <param name="hidden">Final hidden states [B, T, H].</param>
    /// <param name="labels">Labels [B, T], not yet shifted; <see cref="CausalLMLoss.IgnoreIndex"/> where no loss is wanted.</param>
    public static double[] Backward(CausalLM model, Tensor hidden, Tensor labels)
    {
        using var scope = NewDisposeScope();
        long b = hidden.shape[0], t = hidden.shape[1], h = hidden.shape[2];
        var shiftedHidden = hidden.narrow(1, 0, t - 1).reshape(-1, h);
        var shiftedLabels = labels.narrow(1, 1, t - 1).to(hidden.device);
        var mask = shiftedLabels.ne(CausalLMLoss.IgnoreIndex);
        var counts = mask.sum(1).to_type(ScalarType.Float32);                                   // [B]
        var keep = mask.reshape(-1).nonzero().squeeze(1);
        var example = keep.div(t - 1, rounding_mode: RoundingMode.floor);                       // example of each kept position
        var logits = model.Logits(shiftedHidden.index_select(0, keep)).to_type(ScalarType.Float32);
        var nll = nn.functional.cross_entropy(logits, shiftedLabels.reshape(-1).index_select(0, keep), reduction: nn.Reduction.None);
        var weights = counts.clamp_min(1).reciprocal().index_select(0, example);
        var perExample = zeros([b], ScalarType.Float32, hidden.device).index_add(0, example, nll.mul(weights), 1);
        perExample.sum().backward();
        var values = perExample.detach().cpu().data<float>().ToArray();
        var n = counts.cpu().data<float>().ToArray();
        return values.Select((v, i) => n[i] > 0 ? (double)v : double.NaN).ToArray();
    }
}
