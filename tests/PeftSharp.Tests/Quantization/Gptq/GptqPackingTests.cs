using PeftSharp.Quantization.Gptq;

namespace PeftSharp.Tests.Quantization.Gptq;

/// <summary>GPTQ bit packing against AutoGPTQ's plain packing loops, for every supported bit width.</summary>
public class GptqPackingTests
{
    static int[,] RandomValues(int rows, int cols, int bits, int seed)
    {
        var rng = new Random(seed);
        var v = new int[rows, cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) v[r, c] = rng.Next(1 << bits);
        return v;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void RowPackingMatchesAutoGptqsLoops(int bits)
    {
        var v = RandomValues(96, 5, bits, bits);
        var expected = NaiveGptq.PackRows(v, bits);
        var packed = GptqPacking.PackRows(NaiveGptq.Flat(v), 96, 5, bits);
        Assert.Equal(NaiveGptq.Flat(expected), packed);
        Assert.Equal(NaiveGptq.Flat(v), GptqPacking.UnpackRows(NaiveGptq.Flat(expected), expected.GetLength(0), 5, bits));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void ColumnPackingMatchesAutoGptqsLoops(int bits)
    {
        var v = RandomValues(3, 64, bits, 10 + bits);
        var expected = NaiveGptq.PackColumns(v, bits);
        Assert.Equal(NaiveGptq.Flat(expected), GptqPacking.PackColumns(NaiveGptq.Flat(v), 3, 64, bits));
        Assert.Equal(NaiveGptq.Flat(v), GptqPacking.UnpackColumns(NaiveGptq.Flat(expected), 3, expected.GetLength(1), bits));
    }

    [Fact]
    public void ThreeBitValuesStraddleWordBoundaries()
    {
        // Value 10 of a 3-bit block: its low two bits are bits 30..31 of word 0, its high bit is bit 0 of word 1.
        var v = new int[32, 1];
        v[10, 0] = 0b111;
        var packed = GptqPacking.PackRows(NaiveGptq.Flat(v), 32, 1, 3);
        Assert.Equal(unchecked((int)0xC0000000u), packed[0]);
        Assert.Equal(1, packed[1]);
        Assert.Equal(0, packed[2]);
    }

    [Theory]
    [InlineData(5)]
    [InlineData(1)]
    public void UnsupportedBitsAreOneLineErrors(int bits)
    {
        var e = Assert.Throws<PeftSharpException>(() => GptqPacking.PackRows(new int[32], 32, 1, bits));
        Assert.Contains("expected 2, 3, 4 or 8", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
