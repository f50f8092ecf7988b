namespace PeftSharp.Quantization;

/// <summary>
/// How a weight is quantized to 4 bits: the data type, values per absmax block, and whether the absmax constants
/// are themselves quantized (double quantization: 8-bit blockwise, blocks of 256, after subtracting their mean).
/// </summary>
public sealed record FourBitOptions(FourBitType Type = FourBitType.Nf4, int BlockSize = 64, bool DoubleQuant = false)
{
    /// <summary>Block size of the second-level (absmax) quantization, fixed by bitsandbytes.</summary>
    public const int NestedBlockSize = 256;

    /// <summary>NF4, block size 64, no double quantization (bitsandbytes' defaults).</summary>
    public static FourBitOptions Nf4 => new();

    /// <summary>This, after checking the block size.</summary>
    /// <exception cref="PeftSharpException">An unsupported block size.</exception>
    public FourBitOptions Validated()
    {
        Blockwise.CheckFourBitBlockSize(BlockSize, "--blocksize");
        return this;
    }

    /// <summary>
    /// Storage per weight in bits: 4 for the code, plus 32/blockSize for a float32 absmax, or with double
    /// quantization 8/blockSize for the 8-bit absmax plus 32/(blockSize·256) for the second-level absmax
    /// (the code tables and the single offset are shared and left out). NF4, block 64: 4.5, or 4.127 with DQ.
    /// </summary>
    public double BitsPerParameter => DoubleQuant ? 4 + 8.0 / BlockSize + 32.0 / (BlockSize * (double)NestedBlockSize) : 4 + 32.0 / BlockSize;

    /// <summary>Type, block size and double quantization, for messages.</summary>
    public override string ToString() =>
        $"{QuantMaps.Name(Type)}, blocksize {BlockSize}{(DoubleQuant ? ", double quantization" : "")}";
}
