namespace PeftSharp.Quantization.Gptq;

/// <summary>
/// GPTQ's bit packing of n-bit integers into int32 words. Along a packed dimension, value j occupies bits
/// [n·j, n·j + n) of a little-endian stream of 32-bit words: for 2, 4 and 8 bits that is 32/n values per word, low
/// bits first; for 3 bits 32 values fill 3 words and values 10 and 21 straddle a word boundary (AutoGPTQ's layout).
/// <c>qweight</c> is packed along its rows (input features), <c>qzeros</c> along its columns (output features).
/// </summary>
internal static class GptqPacking
{
    /// <summary>Packs values [rows, cols] along rows into [rows·bits/32, cols]; rows must be a multiple of 32.</summary>
    public static int[] PackRows(int[] values, int rows, int cols, int bits)
    {
        CheckLength(rows, bits, "rows");
        int packedRows = rows / 32 * bits;
        uint mask = (1u << bits) - 1;
        var packed = new uint[(long)packedRows * cols];
        for (int r = 0; r < rows; r++)
        {
            long bit = (long)r * bits;
            int word = (int)(bit >> 5), shift = (int)(bit & 31);
            for (int c = 0; c < cols; c++)
            {
                uint v = (uint)values[(long)r * cols + c] & mask;
                packed[(long)word * cols + c] |= v << shift;
                if (shift + bits > 32) packed[(long)(word + 1) * cols + c] |= v >> (32 - shift);
            }
        }
        return Array.ConvertAll(packed, u => unchecked((int)u));
    }

    /// <summary>Unpacks [packedRows, cols] words into values [packedRows·32/bits, cols] (each in 0..2^bits−1).</summary>
    public static int[] UnpackRows(int[] packed, int packedRows, int cols, int bits)
    {
        if (packedRows % bits != 0) throw new PeftSharpException($"{packedRows} packed rows is not a multiple of {bits} ({bits}-bit values come in blocks of 32)");
        int rows = packedRows / bits * 32;
        uint mask = (1u << bits) - 1;
        var values = new int[(long)rows * cols];
        for (int r = 0; r < rows; r++)
        {
            long bit = (long)r * bits;
            int word = (int)(bit >> 5), shift = (int)(bit & 31);
            for (int c = 0; c < cols; c++)
            {
                uint v = unchecked((uint)packed[(long)word * cols + c]) >> shift;
                if (shift + bits > 32) v |= unchecked((uint)packed[(long)(word + 1) * cols + c]) << (32 - shift);
                values[(long)r * cols + c] = (int)(v & mask);
            }
        }
        return values;
    }

    /// <summary>Packs values [rows, cols] along columns into [rows, cols·bits/32]; cols must be a multiple of 32.</summary>
    public static int[] PackColumns(int[] values, int rows, int cols, int bits)
    {
        CheckLength(cols, bits, "columns");
        return Transpose(PackRows(Transpose(values, rows, cols), cols, rows, bits), cols / 32 * bits, rows);
    }

    /// <summary>Unpacks [rows, packedCols] words into values [rows, packedCols·32/bits].</summary>
    public static int[] UnpackColumns(int[] packed, int rows, int packedCols, int bits) =>
        Transpose(UnpackRows(Transpose(packed, rows, packedCols), packedCols, rows, bits), packedCols / bits * 32, rows);

    static void CheckLength(int n, int bits, string what)
    {
        GptqConfig.CheckBits(bits, "bits");
        if (n % 32 != 0) throw new PeftSharpException($"GPTQ packing needs a multiple of 32 {what}, got {n}");
    }

    static int[] Transpose(int[] a, int rows, int cols)
    {
        var t = new int[a.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) t[(long)c * rows + r] = a[(long)r * cols + c];
        return t;
    }
}
