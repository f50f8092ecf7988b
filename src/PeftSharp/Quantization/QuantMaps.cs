using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>The two 4-bit data types of QLoRA (bitsandbytes' <c>quant_type</c>).</summary>
public enum FourBitType
{
    /// <summary>NormalFloat4: 16 quantiles of N(0, 1) scaled to [-1, 1] (QLoRA's default).</summary>
    Nf4,
    /// <summary>4-bit float: 1 sign, 2 exponent and 1 mantissa bit, scaled so the largest value is 1.</summary>
    Fp4,
}

/// <summary>
/// The code tables ("quant maps") bitsandbytes quantizes with: the 4-bit NF4 and FP4 tables, indexed by the 4-bit
/// code, and the signed 8-bit dynamic map used for double quantization of the absmax constants.
/// </summary>
public static class QuantMaps
{
    /// <summary>NF4 values by code 0..15 (bitsandbytes' <c>get_4bit_type("nf4")</c>, sorted, so code = rank).</summary>
    public static IReadOnlyList<float> Nf4 { get; } =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>
    /// FP4 values by code 0..15. Bit 3 is the sign; bits 2..0 are exponent and mantissa with bitsandbytes' own
    /// layout (0b000 = 0, 0b001 = 0.0625 subnormal, 0b010 = 8, 0b011 = 12, 0b100 = 4, 0b101 = 6, 0b110 = 2,
    /// 0b111 = 3), all divided by 12 so the largest magnitude is 1 (<c>get_4bit_type("fp4")</c>). Not sorted.
    /// </summary>
    public static IReadOnlyList<float> Fp4 { get; } =
        new[] { 0f, 0.0625f, 8f, 12f, 4f, 6f, 2f, 3f, -0f, -0.0625f, -8f, -12f, -4f, -6f, -2f, -3f }.Select(v => v / 12f).ToArray();

    /// <summary>The 16 code values of <paramref name="type"/>.</summary>
    public static IReadOnlyList<float> For(FourBitType type) => type == FourBitType.Nf4 ? Nf4 : Fp4;

    /// <summary>bitsandbytes' name: nf4 or fp4.</summary>
    public static string Name(FourBitType type) => type == FourBitType.Nf4 ? "nf4" : "fp4";

    /// <summary>Parses nf4 or fp4 (any case); <paramref name="what"/> names the flag in errors.</summary>
    /// <exception cref="PeftSharpException">Any other name.</exception>
    public static FourBitType Parse(string name, string what = "--quant-type") => name.ToLowerInvariant() switch
    {
        "nf4" => FourBitType.Nf4,
        "fp4" => FourBitType.Fp4,
        _ => throw new PeftSharpException($"{what}: expected nf4 or fp4, got \"{name}\""),
    };

    static float[]? dynamic;

    /// <summary>
    /// bitsandbytes' <c>create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)</c>: 256 sorted values in
    /// [-0.993, 1] (a dynamic exponent 10^-6..10^0 times a linear fraction), the code book of 8-bit blockwise
    /// quantization. Built with the same float32 torch operations (linspace, midpoints, scaling) as bitsandbytes.
    /// </summary>
    public static IReadOnlyList<float> DynamicSigned8Bit => dynamic ??= BuildDynamicMap();

    static float[] BuildDynamicMap()
    {
        const int maxExponentBits = 7, nonSignBits = 7;
        // 10 ** (-(7 - 1) + i) as Python evaluates it, for i = 0..6.
        double[] powers = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
        var data = new List<float>();
        using var scope = NewDisposeScope();
        for (int i = 0; i < maxExponentBits; i++)
        {
            int fractionItems = (1 << (i + nonSignBits - maxExponentBits)) + 1;
            var boundaries = linspace(0.1, 1, fractionItems, ScalarType.Float32);
            var means = boundaries.narrow(0, 0, fractionItems - 1).add(boundaries.narrow(0, 1, fractionItems - 1)).div(2.0);
            var positive = means.mul(powers[i]).data<float>().ToArray();
            data.AddRange(positive);
            data.AddRange(positive.Select(v => -v));
        }
        // additional_items = 2^(7 - 7) - 1 = 0: no extra linear region.
        data.Add(0f);
        data.Add(1f);
        if (data.Count != 256) throw new InvalidOperationException($"dynamic map has {data.Count} entries, expected 256");
        data.Sort();
        return [.. data];
    }

    /// <summary>A code table as a float32 tensor on a device.</summary>
    public static Tensor Tensor(IReadOnlyList<float> values, Device? device = null) =>
        torch.tensor(values.ToArray(), ScalarType.Float32, device ?? CPU);
}
