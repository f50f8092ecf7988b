namespace PeftSharp.Tensors;

/// <summary>
/// bfloat16 is the top 16 bits of an IEEE float32. These convert between a float and those bits,
/// independently of libtorch, so tests (and tools) can state exact expected bit patterns.
/// </summary>
public static class BFloat16Bits
{
    /// <summary>Rounds to the nearest bfloat16, ties to even (as PyTorch does); NaN stays a quiet NaN.</summary>
    public static ushort FromFloat(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x0040);
        var roundingBias = 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>Exact: every bfloat16 is a float32.</summary>
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);
}
