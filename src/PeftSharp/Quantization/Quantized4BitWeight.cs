using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// A weight stored in 4 bits, as bitsandbytes' <c>Params4bit</c>: packed uint8 codes [(n+1)/2, 1] (two per byte,
/// first in the high nibble) and the <see cref="FourBitQuantState"/> that dequantizes them.
/// </summary>
public sealed class Quantized4BitWeight : IDisposable
{
    /// <summary>A weight from packed codes and their state.</summary>
    /// <exception cref="PeftSharpException"><paramref name="packed"/> is not uint8.</exception>
    public Quantized4BitWeight(Tensor packed, FourBitQuantState state)
    {
        if (packed.dtype != ScalarType.Byte) throw new PeftSharpException($"4-bit weight: packed codes must be uint8, got {packed.dtype}");
        Packed = packed.DetachFromDisposeScope();
        State = state;
    }

    /// <summary>The 4-bit codes, two per byte (uint8).</summary>
    public Tensor Packed { get; }
    /// <summary>Block constants and settings.</summary>
    public FourBitQuantState State { get; }

    /// <summary>
    /// Quantizes a weight (any float dtype; computed in float32, as bitsandbytes does). With double quantization the
    /// absmax constants lose their mean (the offset) and are 8-bit quantized in blocks of 256 with the signed dynamic map.
    /// </summary>
    public static Quantized4BitWeight Quantize(Tensor weight, FourBitOptions options)
    {
        options.Validated();
        var device = weight.device;
        using var scope = NewDisposeScope();
        var (packed, absmax) = Blockwise.Quantize4Bit(weight, options.Type, options.BlockSize);
        var code = QuantMaps.Tensor(QuantMaps.For(options.Type), device);
        NestedAbsmax? nested = null;
        if (options.DoubleQuant)
        {
            var offset = absmax.mean();
            var centred = absmax.sub(offset);
            var code256 = QuantMaps.Tensor(QuantMaps.DynamicSigned8Bit, device);
            var (q, absmax2) = Blockwise.QuantizeBlockwise8Bit(centred, code256, FourBitOptions.NestedBlockSize);
            nested = new NestedAbsmax(absmax2, code256, offset.item<float>());
            absmax = q;
        }
        var state = new FourBitQuantState(options.Type, options.BlockSize, weight.shape, weight.dtype, code, absmax, nested);
        return new Quantized4BitWeight(packed, state);
    }

    /// <summary>A quantized weight of the right shapes on the meta device (parameter counts, no memory).</summary>
    public static Quantized4BitWeight Meta(long[] shape, FourBitOptions options, ScalarType dtype)
    {
        var meta = new Device(DeviceType.META);
        long n = shape.Aggregate(1L, (a, b) => a * b), blocks = (n + options.BlockSize - 1) / options.BlockSize;
        var packed = empty([(n + 1) / 2, 1], ScalarType.Byte, meta);
        var code = empty([16], ScalarType.Float32, meta);
        NestedAbsmax? nested = options.DoubleQuant
            ? new NestedAbsmax(empty([(blocks + FourBitOptions.NestedBlockSize - 1) / FourBitOptions.NestedBlockSize], ScalarType.Float32, meta),
                               empty([256], ScalarType.Float32, meta), 0f)
            : null;
        var absmax = empty([blocks], options.DoubleQuant ? ScalarType.Byte : ScalarType.Float32, meta);
        return new Quantized4BitWeight(packed, new FourBitQuantState(options.Type, options.BlockSize, shape, dtype, code, absmax, nested));
    }

    /// <summary>The weight back in <paramref name="dtype"/>.</summary>
    public Tensor Dequantize(ScalarType dtype = ScalarType.Float32) => State.Dequantize(Packed, dtype);

    /// <summary>Disposes the codes and the state.</summary>
    public void Dispose()
    {
        Packed.Dispose();
        State.Dispose();
    }
}
