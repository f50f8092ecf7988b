using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization.Gptq;

/// <summary>
/// One GPTQ layer's tensors as transformers/AutoGPTQ/GPTQModel store them under the layer's name:
/// <c>qweight</c> int32 [in·bits/32, out] (codes packed along the input), <c>qzeros</c> int32 [groups, out·bits/32]
/// (zero points packed along the output; v1 stores zero − 1), <c>scales</c> float16 [groups, out] and <c>g_idx</c>
/// int32 [in]. With PeftSharp's float-zero extension <c>qzeros</c> is float32 [groups, out] holding the zero points.
/// </summary>
public static class GptqFormat
{
    /// <summary>The tensor names a GPTQ layer stores (suffixes after the layer's path).</summary>
    public static readonly IReadOnlyList<string> Suffixes = ["qweight", "qzeros", "scales", "g_idx"];

    /// <summary>The layer path of a GPTQ tensor key (<c>….q_proj.qweight</c> → <c>….q_proj</c>), or null for other keys.</summary>
    public static string? LayerOf(string key)
    {
        foreach (var s in Suffixes)
            if (key.EndsWith("." + s, StringComparison.Ordinal)) return key[..^(s.Length + 1)];
        return null;
    }

    /// <summary>
    /// Unpacks one layer. <paramref name="gIdx"/> may be null (then column i is in group i / group_size).
    /// <paramref name="where"/> names the layer in errors (one line: tensor, shape or dtype, and what was expected).
    /// </summary>
    public static GptqWeight Read(Tensor qweight, Tensor qzeros, Tensor scales, Tensor? gIdx, GptqConfig config, long inFeatures, long outFeatures, string where)
    {
        int bits = config.Bits;
        long groupSize = config.GroupSizeFor(inFeatures);
        long groups = (inFeatures + groupSize - 1) / groupSize;
        if (inFeatures % 32 != 0 || outFeatures % 32 != 0)
            throw new PeftSharpException($"{where}: a GPTQ layer needs in and out features that are multiples of 32, got [{outFeatures}, {inFeatures}]");
        Expect(qweight, "qweight", [inFeatures / 32 * bits, outFeatures], ScalarType.Int32, where);
        if (config.FloatZeros) Expect(qzeros, "qzeros", [groups, outFeatures], ScalarType.Float32, where);
        else Expect(qzeros, "qzeros", [groups, outFeatures / 32 * bits], ScalarType.Int32, where);
        if (!scales.shape.SequenceEqual([groups, outFeatures]) || !scales.is_floating_point())
            throw new PeftSharpException($"{where}.scales: shape [{string.Join(", ", scales.shape)}] {scales.dtype}, expected a float tensor [{groups}, {outFeatures}]");
        using var scope = NewDisposeScope();
        var codes = GptqPacking.UnpackRows(Ints(qweight), (int)qweight.shape[0], (int)outFeatures, bits);
        Tensor zeros;
        if (config.FloatZeros) zeros = qzeros.to_type(ScalarType.Float32);
        else
        {
            var z = GptqPacking.UnpackColumns(Ints(qzeros), (int)groups, (int)qzeros.shape[1], bits);
            int offset = config.IsV2 ? 0 : 1; // v1 stores zero − 1
            zeros = tensor(Array.ConvertAll(z, v => (float)(v + offset)), [groups, outFeatures]);
        }
        Tensor index;
        if (gIdx is null) index = arange(inFeatures, ScalarType.Int64).div(groupSize, rounding_mode: RoundingMode.floor);
        else
        {
            if (!gIdx.shape.SequenceEqual([inFeatures]) || gIdx.dtype is not (ScalarType.Int32 or ScalarType.Int64))
                throw new PeftSharpException($"{where}.g_idx: shape [{string.Join(", ", gIdx.shape)}] {gIdx.dtype}, expected int32 [{inFeatures}]");
            index = gIdx.to_type(ScalarType.Int64).cpu();
            if (inFeatures > 0 && (index.min().item<long>() < 0 || index.max().item<long>() >= groups))
                throw new PeftSharpException($"{where}.g_idx: group indices must lie in 0..{groups - 1}");
        }
        var codeTensor = tensor(Array.ConvertAll(codes, v => (byte)v), [inFeatures, outFeatures]);
        return new GptqWeight(bits, groupSize, codeTensor, scales.cpu(), zeros, index);
    }

    /// <summary>
    /// The four tensors of one layer for <paramref name="config"/> (keys are the suffixes). Integer formats need
    /// integer zero points that fit: 0..2^bits−1 for v2, 1..2^bits for v1 (which stores zero − 1).
    /// </summary>
    public static IReadOnlyList<KeyValuePair<string, Tensor>> Write(GptqWeight w, GptqConfig config, string where)
    {
        if (w.Bits != config.Bits) throw new PeftSharpException($"{where}: a {w.Bits}-bit layer cannot be written with bits {config.Bits}");
        int inF = (int)w.InFeatures, outF = (int)w.OutFeatures, groups = (int)w.Groups;
        if (inF % 32 != 0 || outF % 32 != 0)
            throw new PeftSharpException($"{where}: GPTQ packing needs in and out features that are multiples of 32, got [{outF}, {inF}]");
        var codes = w.Codes.to_type(ScalarType.Int32).data<int>().ToArray();
        var qweight = tensor(GptqPacking.PackRows(codes, inF, outF, w.Bits), [inF / 32 * w.Bits, outF]);
        Tensor qzeros;
        if (config.FloatZeros) qzeros = w.Zeros.clone();
        else
        {
            var z = w.Zeros.data<float>().ToArray();
            int offset = config.IsV2 ? 0 : 1, maxq = (1 << w.Bits) - 1;
            var stored = new int[z.Length];
            for (int k = 0; k < z.Length; k++)
            {
                if (z[k] != MathF.Round(z[k]))
                    throw new PeftSharpException($"{where}: zero point {z[k]} is not an integer; integer GPTQ qzeros cannot hold it (write float zero points instead)");
                stored[k] = (int)z[k] - offset;
                if (stored[k] < 0 || stored[k] > maxq)
                    throw new PeftSharpException($"{where}: zero point {z[k]} does not fit a {w.Bits}-bit {config.CheckpointFormat} checkpoint (range {offset}..{maxq + offset})");
            }
            qzeros = tensor(GptqPacking.PackColumns(stored, groups, outF, w.Bits), [groups, outF / 32 * w.Bits]);
        }
        return
        [
            new("qweight", qweight),
            new("qzeros", qzeros),
            new("scales", w.Scales.to_type(ScalarType.Float16)),
            new("g_idx", w.GIdx.to_type(ScalarType.Int32)),
        ];
    }

    static int[] Ints(Tensor t) => t.cpu().contiguous().data<int>().ToArray();

    static void Expect(Tensor t, string name, long[] shape, ScalarType dtype, string where)
    {
        if (!t.shape.SequenceEqual(shape) || t.dtype != dtype)
            throw new PeftSharpException($"{where}.{name}: shape [{string.Join(", ", t.shape)}] {t.dtype}, expected {dtype} [{string.Join(", ", shape)}]");
    }
}
