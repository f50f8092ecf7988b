namespace PeftSharp.Tests.Quantization;

/// <summary>
/// An independent, plain-loop implementation of bitsandbytes' blockwise 4-bit quantization, written from its
/// definition and sharing no code with the library:
/// <list type="bullet">
/// <item>the values are cut into blocks of <c>blockSize</c> (the last one may be shorter); absmax = max |x| per block;</item>
/// <item>each value is scaled into [-1, 1] (x · (1/absmax) for whole blocks, x / absmax for the last partial one, as
/// bitsandbytes' reference backend does) and replaced by the index of the nearest code (ties: the lower value);</item>
/// <item>FP4 takes the nearest magnitude and sets bit 3 for negative values;</item>
/// <item>two codes per byte, the first in the high nibble (an odd count is padded with the code of 0);</item>
/// <item>dequantization: code[q] · absmax.</item>
/// </list>
/// Double quantization: absmax − offset (offset = their mean), 8-bit codes in blocks of 256 with a 256-entry map.
/// </summary>
internal static class NaiveFourBit
{
    public static readonly float[] Nf4 =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>FP4: sign bit 3; bits 2..0 → 0, 0.0625, 8, 12, 4, 6, 2, 3; everything divided by 12.</summary>
    public static readonly float[] Fp4 = BuildFp4();

    static float[] BuildFp4()
    {
        float[] magnitude = [0f, 0.0625f, 8f, 12f, 4f, 6f, 2f, 3f];
        var table = new float[16];
        for (int code = 0; code < 16; code++)
        {
            float m = magnitude[code & 7] / 12f;
            table[code] = (code & 8) != 0 ? -m : m;
        }
        return table;
    }

    public sealed record Result(byte[] Packed, float[] Absmax, byte[] Codes);

    public static Result Quantize(float[] x, bool fp4, int blockSize)
    {
        int n = x.Length, blocks = (n + blockSize - 1) / blockSize;
        var absmax = new float[blocks];
        var codes = new byte[n + (n % 2)];
        for (int b = 0; b < blocks; b++)
        {
            int start = b * blockSize, end = Math.Min(n, start + blockSize);
            float am = 0;
            for (int i = start; i < end; i++) am = Math.Max(am, Math.Abs(x[i]));
            absmax[b] = am;
            float safe = Math.Max(am, 1e-38f);
            bool partial = end - start < blockSize;
            float inverse = 1f / safe;
            for (int i = start; i < end; i++)
            {
                float s = partial ? x[i] / safe : x[i] * inverse;
                s = Math.Clamp(s, -1f, 1f);
                codes[i] = fp4 ? NearestFp4(s) : Nearest(Nf4, s);
            }
        }
        if (n % 2 == 1) codes[n] = fp4 ? NearestFp4(0f) : Nearest(Nf4, 0f);
        var packed = new byte[codes.Length / 2];
        for (int i = 0; i < packed.Length; i++) packed[i] = (byte)((codes[2 * i] << 4) | codes[2 * i + 1]);
        return new Result(packed, absmax, codes[..n]);
    }

    /// <summary>Index of the nearest value of a sorted table (distance in double; ties to the lower value).</summary>
    public static byte Nearest(IReadOnlyList<float> sorted, float s)
    {
        int best = 0;
        double bestDistance = double.MaxValue;
        for (int k = 0; k < sorted.Count; k++)
        {
            double d = Math.Abs((double)s - sorted[k]);
            if (d < bestDistance) { bestDistance = d; best = k; }
        }
        return (byte)best;
    }

    static byte NearestFp4(float s)
    {
        double m = Math.Abs((double)s);
        int best = 0;
        double bestDistance = double.MaxValue, bestValue = double.MaxValue;
        for (int k = 0; k < 8; k++)
        {
            double v = Fp4[k], d = Math.Abs(m - v);
            if (d < bestDistance || (d == bestDistance && v < bestValue)) { bestDistance = d; bestValue = v; best = k; }
        }
        return (byte)(best | (s < 0 ? 8 : 0));
    }

    /// <summary>code[q]·absmax for packed codes (high nibble first).</summary>
    public static float[] Dequantize(byte[] packed, float[] absmax, float[] code, int blockSize, int n)
    {
        var y = new float[n];
        for (int i = 0; i < n; i++)
        {
            byte b = packed[i / 2];
            int q = i % 2 == 0 ? b >> 4 : b & 15;
            y[i] = code[q] * absmax[i / blockSize];
        }
        return y;
    }

    /// <summary>8-bit blockwise codes of values with a sorted 256-entry map, and the per-block absmax.</summary>
    public static (byte[] Codes, float[] Absmax) QuantizeBlockwise8(float[] x, float[] map, int blockSize)
    {
        int n = x.Length, blocks = (n + blockSize - 1) / blockSize;
        var codes = new byte[n];
        var absmax = new float[blocks];
        for (int b = 0; b < blocks; b++)
        {
            int start = b * blockSize, end = Math.Min(n, start + blockSize);
            float am = 0;
            for (int i = start; i < end; i++) am = Math.Max(am, Math.Abs(x[i]));
            absmax[b] = am;
            float safe = Math.Max(am, 1e-38f), inverse = 1f / safe;
            bool partial = end - start < blockSize;
            for (int i = start; i < end; i++)
                codes[i] = Nearest(map, Math.Clamp(partial ? x[i] / safe : x[i] * inverse, -1f, 1f));
        }
        return (codes, absmax);
    }

    /// <summary>
    /// bitsandbytes' create_dynamic_map(signed=True) in double precision: for i = 0..6, the 2^i midpoints of
    /// linspace(0.1, 1, 2^i + 1) times 10^(i-6), both signs, plus 0 and 1; sorted. (bitsandbytes computes it in
    /// float32, so its entries agree with these to float32 rounding.)
    /// </summary>
    public static double[] DynamicMapDouble()
    {
        var data = new List<double>();
        for (int i = 0; i < 7; i++)
        {
            int items = (1 << i) + 1;
            double step = 0.9 / (items - 1);
            for (int k = 0; k < items - 1; k++)
            {
                double mean = (0.1 + step * k + 0.1 + step * (k + 1)) / 2;
                double v = Math.Pow(10, i - 6) * mean;
                data.Add(v);
                data.Add(-v);
            }
        }
        data.Add(0);
        data.Add(1);
        data.Sort();
        return [.. data];
    }

    /// <summary>Largest gap between neighbouring values of a code table (sorted or not).</summary>
    public static double LargestGap(IEnumerable<float> code)
    {
        var sorted = code.Select(v => (double)v).Distinct().OrderBy(v => v).ToArray();
        double gap = 0;
        for (int i = 1; i < sorted.Length; i++) gap = Math.Max(gap, sorted[i] - sorted[i - 1]);
        return gap;
    }
}
