using PeftSharp.Models;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SideTuning;

/// <summary>
/// LST's initialisation of a side block: structured pruning of the backbone block at the same depth, keeping the
/// units with the largest weight norms (L1 by default, as LST's L1 strategy). The kept units are:
/// <list type="bullet">
/// <item>residual dimensions: the hidden/r columns of the input embedding with the largest norms, the same for every
/// block, the final norm and the taps (the residual stream is one space);</item>
/// <item>attention: per head the head_dim/r dimensions whose query, key and value rows and output-projection columns
/// have the largest summed norm over all heads (Llama: whole rotary pairs d, d + head_dim/2, so rotate_half still pairs
/// them), the same in every head;</item>
/// <item>MLP: the inner/r units whose up-projection rows (GPT-2 c_fc; Llama gate_proj and up_proj) and down-projection
/// columns have the largest summed norm.</item>
/// </list>
/// Every matrix keeps the rows and columns of those units; biases and norm weights follow. Indices are kept in
/// ascending order; ties go to the lower index.
/// </summary>
internal static class StructuredPruning
{
    /// <summary>Indices of the <paramref name="k"/> largest scores, ascending; ties keep the lower index.</summary>
    public static long[] TopK(double[] scores, int k)
    {
        if (k > scores.Length) throw new PeftSharpException($"cannot keep {k} of {scores.Length} units");
        return Enumerable.Range(0, scores.Length)
            .OrderByDescending(i => scores[i]).ThenBy(i => i)
            .Take(k).Select(i => (long)i).Order().ToArray();
    }

    /// <summary>Norm of every row of [out, in] <paramref name="w"/> (dim 1) or column (dim 0), in double.</summary>
    public static double[] Norms(Tensor w, int dim, bool l2)
    {
        using var scope = NewDisposeScope();
        var d = w.detach().to_type(ScalarType.Float64);
        var n = l2 ? d.pow(2).sum(dim).sqrt() : d.abs().sum(dim);
        return n.cpu().data<double>().ToArray();
    }

    static double[] Add(params double[][] parts)
    {
        var sum = new double[parts[0].Length];
        foreach (var p in parts)
            for (int i = 0; i < sum.Length; i++) sum[i] += p[i];
        return sum;
    }

    /// <summary>The kept residual dimensions: columns of the input embedding table [vocab, hidden] with the largest norms.</summary>
    public static long[] ResidualDims(Tensor embedding, int keep, bool l2) => TopK(Norms(embedding, 0, l2), keep);

    /// <summary>
    /// Kept dimensions inside one head: scores of rows h·headDim + d summed over heads (q, k, v rows and o columns),
    /// whole rotary pairs when <paramref name="rotaryPairs"/>.
    /// </summary>
    public static long[] HeadDims(double[][] perUnitScores, int[] headsPerScore, int headDim, int keep, bool rotaryPairs)
    {
        var score = new double[headDim];
        for (int s = 0; s < perUnitScores.Length; s++)
            for (int h = 0; h < headsPerScore[s]; h++)
                for (int d = 0; d < headDim; d++) score[d] += perUnitScores[s][h * headDim + d];
        if (!rotaryPairs) return TopK(score, keep);
        int half = headDim / 2;
        var pairs = Enumerable.Range(0, half).Select(p => score[p] + score[p + half]).ToArray();
        var kept = TopK(pairs, keep / 2);
        return [.. kept, .. kept.Select(p => p + half)];
    }

    /// <summary>Rows h·headDim + d for every head h and kept d (the head structure of a projection's output).</summary>
    public static long[] HeadRows(long[] dims, int heads, int headDim) =>
        Enumerable.Range(0, heads).SelectMany(h => dims.Select(d => h * (long)headDim + d)).ToArray();

    /// <summary>Copies <paramref name="src"/>'s [out, in] weight at (rows, cols), and its bias at rows, into <paramref name="dst"/>.</summary>
    public static void CopyLinear(Linear src, Linear dst, long[] rows, long[] cols)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var w = src.WeightOutIn.detach().index_select(0, tensor(rows, device: src.weight.device)).index_select(1, tensor(cols, device: src.weight.device));
        dst.SetWeightOutIn(w.to(dst.weight.dtype, dst.weight.device));
        if (src.bias is not null && dst.bias is not null)
            dst.bias.copy_(src.bias.detach().index_select(0, tensor(rows, device: src.bias.device)).to(dst.bias.dtype, dst.bias.device));
    }

    /// <summary>Copies the entries <paramref name="index"/> of a vector parameter into another.</summary>
    public static void CopyVector(Tensor src, Tensor dst, long[] index)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        dst.copy_(src.detach().index_select(0, tensor(index, device: src.device)).to(dst.dtype, dst.device));
    }

    /// <summary>Initialises a GPT-2 side block from the backbone's block of the same depth.</summary>
    public static void Prune(Gpt2Block src, Gpt2Block dst, long[] residual, ModelConfig config, int r, bool l2)
    {
        int heads = config.Heads, hd = config.HeadDim, h = config.Hidden;
        var qkv = src.attn.c_attn.WeightOutIn; // [3H, H]
        using var scope = NewDisposeScope();
        var q = qkv.narrow(0, 0, h); var k = qkv.narrow(0, h, h); var v = qkv.narrow(0, 2 * h, h);
        var headDims = HeadDims([Norms(q, 1, l2), Norms(k, 1, l2), Norms(v, 1, l2), Norms(src.attn.c_proj.WeightOutIn, 0, l2)],
            [heads, heads, heads, heads], hd, hd / r, rotaryPairs: false);
        var rows = HeadRows(headDims, heads, hd);
        var qkvRows = rows.Concat(rows.Select(x => x + h)).Concat(rows.Select(x => x + 2L * h)).ToArray();
        CopyLinear(src.attn.c_attn, dst.attn.c_attn, qkvRows, residual);
        CopyLinear(src.attn.c_proj, dst.attn.c_proj, residual, rows);
        var units = TopK(Add(Norms(src.mlp.c_fc.WeightOutIn, 1, l2), Norms(src.mlp.c_proj.WeightOutIn, 0, l2)), config.Inner / r);
        CopyLinear(src.mlp.c_fc, dst.mlp.c_fc, units, residual);
        CopyLinear(src.mlp.c_proj, dst.mlp.c_proj, residual, units);
        CopyVector(src.ln_1.weight, dst.ln_1.weight, residual);
        CopyVector(src.ln_1.bias, dst.ln_1.bias, residual);
        CopyVector(src.ln_2.weight, dst.ln_2.weight, residual);
        CopyVector(src.ln_2.bias, dst.ln_2.bias, residual);
    }

    /// <summary>Initialises a Llama-family side layer from the backbone's layer of the same depth.</summary>
    public static void Prune(LlamaDecoderLayer src, LlamaDecoderLayer dst, long[] residual, ModelConfig config, int r, bool l2)
    {
        int heads = config.Heads, kv = config.KeyValueHeads, hd = config.HeadDim;
        var a = src.self_attn;
        var headDims = HeadDims([Norms(a.q_proj.WeightOutIn, 1, l2), Norms(a.k_proj.WeightOutIn, 1, l2), Norms(a.v_proj.WeightOutIn, 1, l2), Norms(a.o_proj.WeightOutIn, 0, l2)],
            [heads, kv, kv, heads], hd, hd / r, rotaryPairs: true);
        var qRows = HeadRows(headDims, heads, hd);
        var kvRows = HeadRows(headDims, kv, hd);
        CopyLinear(a.q_proj, dst.self_attn.q_proj, qRows, residual);
        CopyLinear(a.k_proj, dst.self_attn.k_proj, kvRows, residual);
        CopyLinear(a.v_proj, dst.self_attn.v_proj, kvRows, residual);
        CopyLinear(a.o_proj, dst.self_attn.o_proj, residual, qRows);
        var m = src.mlp;
        var units = TopK(Add(Norms(m.gate_proj.WeightOutIn, 1, l2), Norms(m.up_proj.WeightOutIn, 1, l2), Norms(m.down_proj.WeightOutIn, 0, l2)), config.Inner / r);
        CopyLinear(m.gate_proj, dst.mlp.gate_proj, units, residual);
        CopyLinear(m.up_proj, dst.mlp.up_proj, units, residual);
        CopyLinear(m.down_proj, dst.mlp.down_proj, residual, units);
        CopyVector(src.input_layernorm.weight, dst.input_layernorm.weight, residual);
        CopyVector(src.post_attention_layernorm.weight, dst.post_attention_layernorm.weight, residual);
    }
}
