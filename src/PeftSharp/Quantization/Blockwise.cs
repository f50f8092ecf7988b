using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// Blockwise absmax quantization as bitsandbytes computes it (its PyTorch reference backend), with torch operations
/// only, so it runs on any device. A tensor is flattened and cut into blocks of <c>blockSize</c> values (the last
/// block may be shorter); each block is divided by its absolute maximum, clamped to [-1, 1] and every value is
/// replaced by the index of the nearest code (ties go to the lower code). Dequantization is code[q]·absmax, in float32.
/// </summary>
public static class Blockwise
{
    /// <summary>Block sizes bitsandbytes accepts for 4-bit quantization.</summary>
    public static readonly int[] FourBitBlockSizes = [32, 64, 128, 256, 512, 1024, 2048, 4096];

    /// <summary>The absmax of every block [blocks] and the values scaled into [-1, 1] (flat, float32).</summary>
    public static (Tensor Scaled, Tensor Absmax) Scale(Tensor flat, int blockSize)
    {
        using var scope = NewDisposeScope();
        long n = flat.numel(), rem = n % blockSize, full = n - rem, blocks = full / blockSize;
        var body = flat.narrow(0, 0, full).view(blocks, blockSize);
        var absmax = body.abs().amax([1]);
        // bitsandbytes multiplies by the reciprocal for whole blocks and divides for the last partial one.
        var scaled = body.mul(absmax.clamp_min(1e-38).reciprocal().unsqueeze(1)).clamp(-1, 1).view(-1);
        if (rem > 0)
        {
            var tail = flat.narrow(0, full, rem);
            var am = tail.abs().max().clamp_min(1e-38);
            absmax = cat([absmax, am.unsqueeze(0)]);
            scaled = cat([scaled, tail.div(am).clamp(-1, 1)]);
        }
        return (scaled.MoveToOuterDisposeScope(), absmax.MoveToOuterDisposeScope());
    }

    /// <summary>Decision boundaries between neighbouring values of a sorted code table: (c[i] + c[i+1]) / 2 in float32.</summary>
    public static Tensor Midpoints(Tensor sortedCode)
    {
        long k = sortedCode.numel();
        return sortedCode.narrow(0, 0, k - 1).add(sortedCode.narrow(0, 1, k - 1)).div(2.0);
    }

    // FP4 magnitudes in increasing order and the 3-bit pattern of each (bitsandbytes' bit layout).
    static readonly long[] Fp4MagnitudeBits = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

    /// <summary>
    /// 4-bit codes (uint8, one per value) for values already in [-1, 1]. NF4: the nearest entry of the sorted table.
    /// FP4: the nearest magnitude, with the sign bit set for negative values (as bitsandbytes' CUDA kernel, so a
    /// tiny negative value becomes -0 = code 8).
    /// </summary>
    public static Tensor Codes4Bit(Tensor scaled, FourBitType type)
    {
        using var scope = NewDisposeScope();
        var device = scaled.device;
        Tensor codes;
        if (type == FourBitType.Nf4)
        {
            var bounds = Midpoints(QuantMaps.Tensor(QuantMaps.Nf4, device));
            codes = bucketize(scaled, bounds, outInt32: true).to_type(ScalarType.Byte);
        }
        else
        {
            var magnitudes = Fp4MagnitudeBits.Select(b => QuantMaps.Fp4[(int)b]).ToArray();
            var bounds = Midpoints(QuantMaps.Tensor(magnitudes, device));
            var rank = bucketize(scaled.abs(), bounds, outInt32: false);
            var bits = tensor(Fp4MagnitudeBits, device: device).index_select(0, rank.view(-1)).view(rank.shape);
            codes = bits.add(scaled.lt(0).to_type(ScalarType.Int64).mul(8)).to_type(ScalarType.Byte);
        }
        return codes.MoveToOuterDisposeScope();
    }

    /// <summary>Two codes per byte, the first in the high nibble; an odd count is padded with <paramref name="padCode"/>. Shape [(n+1)/2, 1].</summary>
    public static Tensor Pack(Tensor codes, byte padCode)
    {
        using var scope = NewDisposeScope();
        var flat = codes.view(-1);
        if (flat.numel() % 2 == 1) flat = cat([flat, full([1], padCode, ScalarType.Byte, flat.device)]);
        var pairs = flat.view(-1, 2);
        var packed = pairs.select(1, 0).mul(16).add(pairs.select(1, 1)).unsqueeze(1);
        return packed.MoveToOuterDisposeScope();
    }

    /// <summary>Values processed at once (a multiple of every block size), which bounds the temporaries to a few MiB.</summary>
    const long ChunkElements = 1 << 21;

    /// <summary>
    /// Quantizes a tensor to packed 4-bit codes and per-block absmax (float32), as bitsandbytes'
    /// <c>quantize_4bit</c>: packed uint8 [(n+1)/2, 1], absmax [ceil(n / blockSize)]. Works through the values in
    /// chunks of whole blocks, so a large matrix needs no float32 copy of itself.
    /// </summary>
    public static (Tensor Packed, Tensor Absmax) Quantize4Bit(Tensor values, FourBitType type, int blockSize)
    {
        CheckFourBitBlockSize(blockSize);
        using var scope = NewDisposeScope();
        var flat = values.detach().reshape(-1);
        long n = flat.numel(), blocks = (n + blockSize - 1) / blockSize;
        var packed = empty([(n + 1) / 2, 1], ScalarType.Byte, flat.device);
        var absmax = empty([blocks], ScalarType.Float32, flat.device);
        for (long start = 0; start < n; start += ChunkElements)
        {
            using var chunkScope = NewDisposeScope();
            long length = Math.Min(ChunkElements, n - start);
            var (scaled, am) = Scale(flat.narrow(0, start, length).to_type(ScalarType.Float32), blockSize);
            absmax.narrow(0, start / blockSize, am.numel()).copy_(am);
            // bitsandbytes pads an odd count with a scaled 0 before quantizing.
            if (length % 2 == 1) scaled = cat([scaled, zeros(1, ScalarType.Float32, scaled.device)]);
            packed.narrow(0, start / 2, (length + 1) / 2).copy_(Pack(Codes4Bit(scaled, type), 0));
        }
        return (packed.MoveToOuterDisposeScope(), absmax.MoveToOuterDisposeScope());
    }

    /// <summary>A [256, 2] float32 table: for each byte, the code values of its high and low nibble.</summary>
    public static Tensor PairTable(Tensor code16)
    {
        using var scope = NewDisposeScope();
        var bytes = arange(256, ScalarType.Int64, code16.device);
        var hi = code16.index_select(0, bytes.div(16, RoundingMode.floor));
        var lo = code16.index_select(0, bytes.remainder(16));
        return stack([hi, lo], 1).contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Packed 4-bit codes → values [n] in <paramref name="dtype"/>: code[q]·absmax of the value's block, computed in
    /// float32 (as bitsandbytes) chunk by chunk and written into the output, so no float32 copy of the whole matrix exists.
    /// </summary>
    public static Tensor Dequantize4Bit(Tensor packed, Tensor absmax, Tensor pairTable, int blockSize, long n, ScalarType dtype = ScalarType.Float32)
    {
        using var scope = NewDisposeScope();
        var bytes = packed.view(-1);
        var output = empty([n], dtype, packed.device);
        for (long start = 0; start < n; start += ChunkElements)
        {
            using var chunkScope = NewDisposeScope();
            long length = Math.Min(ChunkElements, n - start);
            var values = pairTable.index_select(0, bytes.narrow(0, start / 2, (length + 1) / 2).to_type(ScalarType.Int32)).view(-1);
            if (values.numel() != length) values = values.narrow(0, 0, length);
            ScaleBlocks(values, absmax.narrow(0, start / blockSize, (length + blockSize - 1) / blockSize), blockSize);
            output.narrow(0, start, length).copy_(values);
        }
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>values[block] *= absmax[block] in place, the last block possibly partial.</summary>
    static void ScaleBlocks(Tensor values, Tensor absmax, int blockSize)
    {
        long n = values.numel(), rem = n % blockSize, full = n - rem, blocks = full / blockSize;
        if (blocks > 0) values.narrow(0, 0, full).view(blocks, blockSize).mul_(absmax.narrow(0, 0, blocks).unsqueeze(1));
        if (rem > 0) values.narrow(0, full, rem).mul_(absmax.narrow(0, blocks, 1));
    }

    /// <summary>
    /// 8-bit blockwise quantization with a sorted 256-entry code (bitsandbytes' <c>quantize_blockwise</c>):
    /// codes uint8 with the input's shape, absmax float32 [ceil(n / blockSize)].
    /// </summary>
    public static (Tensor Codes, Tensor Absmax) QuantizeBlockwise8Bit(Tensor values, Tensor sortedCode256, int blockSize)
    {
        using var scope = NewDisposeScope();
        var flat = values.detach().reshape(-1).to_type(ScalarType.Float32);
        var (scaled, absmax) = Scale(flat, blockSize);
        var codes = bucketize(scaled, Midpoints(sortedCode256), outInt32: true).to_type(ScalarType.Byte).view(values.shape);
        return (codes.MoveToOuterDisposeScope(), absmax.MoveToOuterDisposeScope());
    }

    /// <summary>8-bit codes → float32 values (flat): code[q]·absmax of the value's block.</summary>
    public static Tensor DequantizeBlockwise8Bit(Tensor codes, Tensor absmax, Tensor code256, int blockSize)
    {
        using var scope = NewDisposeScope();
        var values = code256.index_select(0, codes.reshape(-1).to_type(ScalarType.Int32));
        ScaleBlocks(values, absmax, blockSize);
        return values.MoveToOuterDisposeScope();
    }

    /// <summary>Checks a 4-bit block size; <paramref name="what"/> names the field or flag in the message.</summary>
    /// <exception cref="PeftSharpException">A block size bitsandbytes does not support.</exception>
    public static void CheckFourBitBlockSize(int blockSize, string what = "blocksize")
    {
        if (!FourBitBlockSizes.Contains(blockSize))
            throw new PeftSharpException($"{what}: expected one of {string.Join(", ", FourBitBlockSizes)}, got {blockSize}");
    }
}
