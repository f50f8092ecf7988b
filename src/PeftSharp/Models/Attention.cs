using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>Causal scaled-dot-product attention shared by the model families (fused libtorch kernel).</summary>
public static class Attention
{
    /// <summary>
    /// q [B, H, Tq, D]; k, v [B, Hkv, Tk, D] with Tk ≥ Tq (the last Tq keys are the queries' own positions).
    /// keyPadding: optional [B, Tk] with 1 for real tokens and 0 for padding. Returns [B, Tq, H·D].
    /// </summary>
    public static Tensor Causal(Tensor q, Tensor k, Tensor v, Tensor? keyPadding = null)
    {
        using var scope = NewDisposeScope();
        long b = q.shape[0], h = q.shape[1], tq = q.shape[2], d = q.shape[3];
        long hkv = k.shape[1], tk = k.shape[2];
        if (hkv != h)
        {
            // Grouped-query attention: each key/value head serves h / hkv consecutive query heads.
            long rep = h / hkv;
            k = k.unsqueeze(2).expand(b, hkv, rep, tk, d).reshape(b, h, tk, d);
            v = v.unsqueeze(2).expand(b, hkv, rep, tk, d).reshape(b, h, tk, d);
        }
        Tensor output;
        if (keyPadding is null && tq == tk)
            output = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
        else if (keyPadding is null && tq == 1)
            output = nn.functional.scaled_dot_product_attention(q, k, v);
        else
        {
            // Query i (absolute position tk - tq + i) sees keys 0..tk - tq + i.
            var qPos = arange(tk - tq, tk, device: q.device).unsqueeze(1);
            var kPos = arange(0, tk, device: q.device).unsqueeze(0);
            var mask = kPos.le(qPos).view(1, 1, tq, tk);
            if (keyPadding is not null)
            {
                mask = mask.logical_and(keyPadding.to_type(ScalarType.Bool).view(b, 1, 1, tk));
                // A padding query would otherwise see no key at all (NaN); let every query see itself.
                mask = mask.logical_or(kPos.eq(qPos).view(1, 1, tq, tk));
            }
            output = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
        }
        return output.transpose(1, 2).reshape(b, tq, h * d).MoveToOuterDisposeScope();
    }
}
