using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// Double quantization of the absmax constants (bitsandbytes' <c>state2</c>): the 4-bit state's absmax holds 8-bit
/// codes of (absmax − offset) in blocks of <see cref="BlockSize"/>, with these per-block maxima and code table.
/// </summary>
public sealed class NestedAbsmax : IDisposable
{
    /// <summary>
    /// Second-level quantization of the absmax: 8-bit codes <paramref name="absmax"/>, their dynamic map <paramref name="code"/>, the subtracted mean <paramref name="offset"/>.
    /// </summary>
    public NestedAbsmax(Tensor absmax, Tensor code, float offset, int blockSize = FourBitOptions.NestedBlockSize)
    {
        Absmax = absmax.DetachFromDisposeScope();
        Code = code.DetachFromDisposeScope();
        Offset = offset;
        BlockSize = blockSize;
    }

    /// <summary>float32 [ceil(blocks / 256)]: the absmax of each block of (absmax − offset).</summary>
    public Tensor Absmax { get; internal set; }
    /// <summary>float32 [256]: the signed 8-bit dynamic map (<c>nested_quant_map</c>).</summary>
    public Tensor Code { get; internal set; }
    /// <summary>The mean of the first-level absmax, subtracted before quantizing them (<c>nested_offset</c>).</summary>
    public float Offset { get; }
    /// <summary>Absmax values per second-level block (256).</summary>
    public int BlockSize { get; }

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        Absmax.Dispose();
        Code.Dispose();
    }
}

/// <summary>
/// What besides the packed codes is needed to dequantize a 4-bit weight (bitsandbytes' <c>QuantState</c>): the data
/// type and its code table, block size, the weight's shape ([out, in]) and original dtype, and the per-block absmax,
/// either float32 or double-quantized (8-bit codes plus a <see cref="NestedAbsmax"/>).
/// </summary>
public sealed class FourBitQuantState : IDisposable
{
    Tensor? pairTable;

    /// <summary>The state of one 4-bit weight, as bitsandbytes' QuantState.</summary>
    /// <exception cref="PeftSharpException">An unsupported block size or an absmax of the wrong dtype.</exception>
    public FourBitQuantState(FourBitType type, int blockSize, long[] shape, ScalarType dtype, Tensor code, Tensor absmax, NestedAbsmax? nested)
    {
        Blockwise.CheckFourBitBlockSize(blockSize);
        Type = type;
        BlockSize = blockSize;
        Shape = shape;
        DType = dtype;
        Code = code.DetachFromDisposeScope();
        Absmax = absmax.DetachFromDisposeScope();
        Nested = nested;
        long expected = Blocks;
        if (Absmax.numel() != expected)
            throw new PeftSharpException($"4-bit quant state: absmax has {Absmax.numel()} values, expected {expected} for shape [{string.Join(", ", shape)}] and blocksize {blockSize}");
        if (nested is null != (Absmax.dtype != ScalarType.Byte))
            throw new PeftSharpException("4-bit quant state: absmax must be float32 without double quantization and uint8 with it");
    }

    /// <summary>NF4 or FP4.</summary>
    public FourBitType Type { get; }
    /// <summary>Weights per absmax block (bitsandbytes' <c>blocksize</c>).</summary>
    public int BlockSize { get; }
    /// <summary>The weight's shape, [out, in] for a linear layer (also for GPT-2's Conv1D, as transformers stores it).</summary>
    public long[] Shape { get; }
    /// <summary>The dtype the weight had before quantization (<c>quant_state.dtype</c>).</summary>
    public ScalarType DType { get; }
    /// <summary>float32 [16]: value of each 4-bit code (<c>quant_map</c>).</summary>
    public Tensor Code { get; private set; }
    /// <summary>float32 [blocks], or uint8 [blocks] (8-bit codes) with double quantization.</summary>
    public Tensor Absmax { get; private set; }
    /// <summary>Second-level quantization of the absmax (double quantization), or null.</summary>
    public NestedAbsmax? Nested { get; }

    /// <summary>Number of weights.</summary>
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
    /// <summary>Number of absmax blocks.</summary>
    public long Blocks => (Count + BlockSize - 1) / BlockSize;
    /// <summary>The settings this state was made with.</summary>
    public FourBitOptions Options => new(Type, BlockSize, Nested is not null);

    /// <summary>Bytes held: packed codes, absmax and (with double quantization) the second-level absmax and offset.</summary>
    public long StorageBytes => (Count + 1) / 2 + Absmax.numel() * Absmax.element_size() + (Nested is null ? 0 : Nested.Absmax.numel() * 4 + 4);

    /// <summary>Stored bits per weight (<see cref="StorageBytes"/>·8 / count; code tables left out).</summary>
    public double BitsPerParameter => StorageBytes * 8.0 / Count;

    /// <summary>The float32 absmax of every block (undoing double quantization: code2[q]·absmax2 + offset).</summary>
    public Tensor BlockAbsmax(Device device)
    {
        EnsureOn(device);
        if (Nested is null) return Absmax.alias();
        using var scope = NewDisposeScope();
        var absmax = Blockwise.DequantizeBlockwise8Bit(Absmax, Nested.Absmax, Nested.Code, Nested.BlockSize);
        return absmax.add_(tensor(Nested.Offset, ScalarType.Float32, device)).MoveToOuterDisposeScope();
    }

    /// <summary>The weight as <paramref name="dtype"/> with <see cref="Shape"/>, from its packed codes.</summary>
    public Tensor Dequantize(Tensor packed, ScalarType dtype)
    {
        if (packed.numel() != (Count + 1) / 2)
            throw new PeftSharpException($"4-bit weight: {packed.numel()} packed bytes, expected {(Count + 1) / 2} for shape [{string.Join(", ", Shape)}]");
        using var scope = NewDisposeScope();
        var device = packed.device;
        return Blockwise.Dequantize4Bit(packed, BlockAbsmax(device), PairTable(device), BlockSize, Count, dtype).view(Shape).MoveToOuterDisposeScope();
    }

    Tensor PairTable(Device device)
    {
        if (pairTable is null || !Same(pairTable.device, device))
        {
            pairTable?.Dispose();
            using var code = Code.to(device);
            pairTable = Blockwise.PairTable(code).DetachFromDisposeScope();
        }
        return pairTable;
    }

    /// <summary>Moves the state's tensors to the packed weight's device when a module move left them behind.</summary>
    void EnsureOn(Device device)
    {
        if (Same(Absmax.device, device)) return;
        Absmax = Move(Absmax, device);
        Code = Move(Code, device);
        if (Nested is not null)
        {
            Nested.Absmax = Move(Nested.Absmax, device);
            Nested.Code = Move(Nested.Code, device);
        }
    }

    // TorchSharp's Device has no value equality.
    static bool Same(Device a, Device b) => a.type == b.type && (a.type != DeviceType.CUDA || a.index == b.index);

    static Tensor Move(Tensor t, Device device)
    {
        var moved = t.to(device).DetachFromDisposeScope();
        t.Dispose();
        return moved;
    }

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        Code.Dispose();
        Absmax.Dispose();
        Nested?.Dispose();
        pairTable?.Dispose();
    }

    /// <summary>Settings, shape and original dtype, for messages.</summary>
    public override string ToString() => $"{Options}, shape [{string.Join(", ", Shape)}], {Models.ModelLoader.DTypeName(DType)}";
}
