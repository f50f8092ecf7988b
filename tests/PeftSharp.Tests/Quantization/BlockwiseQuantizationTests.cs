using PeftSharp.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// The library's vectorised 4-bit quantizer against the plain-loop one in <see cref="NaiveFourBit"/>: identical
/// codes, packing and absmax; dequantization within half the largest code gap times absmax; double quantization.
/// </summary>
public class BlockwiseQuantizationTests
{
    static float[] RandomValues(int n, int seed, double scale = 1.0)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            // Normal values with a few outliers, as trained weights have.
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            double g = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
            x[i] = (float)(scale * (rng.Next(50) == 0 ? 6 * g : g));
        }
        return x;
    }

    static byte[] Bytes(Tensor t) => t.cpu().contiguous().data<byte>().ToArray();
    static float[] Floats(Tensor t) => t.to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();

    [Fact]
    public void CodeTablesAreBitsandbytes()
    {
        Assert.Equal(NaiveFourBit.Nf4, QuantMaps.Nf4);
        Assert.Equal(NaiveFourBit.Fp4, QuantMaps.Fp4);
        // FP4 as bitsandbytes lists it: 0, 0.0052, 0.6667, 1, 0.3333, 0.5, 0.1667, 0.25, then the negatives.
        Assert.Equal([0, 0.0052, 0.6667, 1, 0.3333, 0.5, 0.1667, 0.25], QuantMaps.Fp4.Take(8).Select(v => Math.Round(v, 4)));
        Assert.True(QuantMaps.Fp4.Skip(8).Zip(QuantMaps.Fp4.Take(8)).All(p => p.First == -p.Second));
    }

    [Theory]
    [InlineData(false, 64, 64 * 40)]     // whole blocks
    [InlineData(false, 64, 64 * 7 + 19)] // a partial last block
    [InlineData(false, 32, 1001)]        // odd count: a padded final nibble
    [InlineData(false, 4096, 5000)]
    [InlineData(true, 64, 64 * 40)]
    [InlineData(true, 128, 128 * 3 + 5)]
    [InlineData(true, 256, 777)]
    public void CodesPackingAndAbsmaxMatchThePlainLoopQuantizer(bool fp4, int blockSize, int n)
    {
        var x = RandomValues(n, seed: n + blockSize);
        x[3] = 0f;        // exact zero
        x[5] = -1e-12f;   // tiny negative: FP4 gives -0 (code 8)
        var expected = NaiveFourBit.Quantize(x, fp4, blockSize);

        using var w = tensor(x).view(1, n);
        using var q = Quantized4BitWeight.Quantize(w, new FourBitOptions(fp4 ? FourBitType.Fp4 : FourBitType.Nf4, blockSize));

        Assert.Equal(new long[] { (n + 1) / 2, 1 }, q.Packed.shape);
        Assert.Equal(ScalarType.Byte, q.Packed.dtype);
        Assert.Equal(expected.Packed, Bytes(q.Packed));
        Assert.Equal(expected.Absmax, Floats(q.State.Absmax));
        Assert.Equal(new long[] { 1, n }, q.State.Shape);
        if (fp4) Assert.Equal(8, expected.Codes[5]);

        var code = fp4 ? NaiveFourBit.Fp4 : NaiveFourBit.Nf4;
        Assert.Equal(NaiveFourBit.Dequantize(expected.Packed, expected.Absmax, code, blockSize, n), Floats(q.Dequantize()));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DequantizationErrorIsWithinHalfTheLargestGapTimesAbsmax(bool fp4)
    {
        const int blockSize = 64, n = 64 * 500;
        var x = RandomValues(n, seed: 7, scale: 0.05);
        using var q = Quantized4BitWeight.Quantize(tensor(x), new FourBitOptions(fp4 ? FourBitType.Fp4 : FourBitType.Nf4, blockSize));
        var y = Floats(q.Dequantize());
        var absmax = Floats(q.State.Absmax);
        double halfGap = NaiveFourBit.LargestGap(fp4 ? NaiveFourBit.Fp4 : NaiveFourBit.Nf4) / 2;
        for (int i = 0; i < n; i++)
            Assert.True(Math.Abs(x[i] - y[i]) <= halfGap * absmax[i / blockSize] * (1 + 1e-6),
                $"value {i}: |{x[i]} − {y[i]}| exceeds {halfGap} · {absmax[i / blockSize]}");
        // The block maximum itself is exact (code ±1).
        for (int b = 0; b < n / blockSize; b++)
        {
            int arg = Enumerable.Range(b * blockSize, blockSize).MaxBy(i => Math.Abs(x[i]));
            Assert.Equal(x[arg], y[arg]);
        }
    }

    [Fact]
    public void DynamicMapIsBitsandbytesSignedDynamicMap()
    {
        var map = QuantMaps.DynamicSigned8Bit;
        var reference = NaiveFourBit.DynamicMapDouble();
        Assert.Equal(256, map.Count);
        for (int i = 0; i < 256; i++) Assert.True(Math.Abs(map[i] - reference[i]) <= 1e-6 * Math.Max(1e-6, Math.Abs(reference[i])) + 1e-12, $"entry {i}: {map[i]} vs {reference[i]}");
        Assert.True(map.Zip(map.Skip(1)).All(p => p.First <= p.Second)); // sorted
        Assert.Equal(1f, map[255]);
        Assert.Contains(0f, map);
    }

    [Fact]
    public void DoubleQuantizationStoresEightBitAbsmaxAndReconstructsThem()
    {
        const int blockSize = 64, n = 64 * 1000 + 10; // 1001 blocks → 4 nested blocks, the last partial
        var x = RandomValues(n, seed: 11, scale: 0.02);
        using var plain = Quantized4BitWeight.Quantize(tensor(x), new FourBitOptions(FourBitType.Nf4, blockSize));
        using var dq = Quantized4BitWeight.Quantize(tensor(x), new FourBitOptions(FourBitType.Nf4, blockSize, DoubleQuant: true));

        // The 4-bit codes do not depend on how absmax is stored.
        Assert.Equal(Bytes(plain.Packed), Bytes(dq.Packed));
        var absmax = Floats(plain.State.Absmax);
        Assert.Equal(ScalarType.Byte, dq.State.Absmax.dtype);
        var nested = dq.State.Nested!;
        Assert.Equal(256, nested.BlockSize);
        Assert.Equal(4, nested.Absmax.numel());

        // offset = mean(absmax); the 8-bit codes and second-level absmax as the plain loop computes them with that offset.
        Assert.Equal(absmax.Average(v => (double)v), nested.Offset, 1e-6 * absmax.Max());
        var centred = absmax.Select(a => a - nested.Offset).ToArray();
        var map = Floats(nested.Code);
        var (codes, absmax2) = NaiveFourBit.QuantizeBlockwise8(centred, map, 256);
        Assert.Equal(codes, Bytes(dq.State.Absmax));
        Assert.Equal(absmax2, Floats(nested.Absmax));

        // Reconstructed absmax: code2[q]·absmax2 + offset, within half the 8-bit map's largest gap times absmax2.
        var restored = Floats(dq.State.BlockAbsmax(CPU));
        double halfGap = NaiveFourBit.LargestGap(map) / 2;
        for (int b = 0; b < absmax.Length; b++)
        {
            float expected = map[codes[b]] * absmax2[b / 256] + nested.Offset;
            Assert.Equal(expected, restored[b]);
            Assert.True(Math.Abs(restored[b] - absmax[b]) <= halfGap * absmax2[b / 256] * (1 + 1e-5), $"block {b}: {restored[b]} vs {absmax[b]}");
        }
    }

    [Theory]
    [InlineData(64, false, 4.5)]
    [InlineData(64, true, 4.127)]
    [InlineData(128, false, 4.25)]
    [InlineData(32, true, 4.254)]
    public void BitsPerParameter(int blockSize, bool doubleQuant, double expected)
    {
        var options = new FourBitOptions(FourBitType.Nf4, blockSize, doubleQuant);
        Assert.Equal(expected, options.BitsPerParameter, 3);
        // The stored tensors of a real-shaped layer come to the same (plus one float for the offset).
        using var w = randn(2048, 2048) * 0.02;
        using var q = Quantized4BitWeight.Quantize(w, options);
        Assert.Equal(expected, q.State.BitsPerParameter, 3);
    }

    [Fact]
    public void RejectsBlockSizesBitsandbytesDoesNotAccept()
    {
        using var w = randn(64, 64);
        var e = Assert.Throws<PeftSharpException>(() => Quantized4BitWeight.Quantize(w, new FourBitOptions(BlockSize: 48)));
        Assert.Contains("32, 64, 128", e.Message);
    }
}
