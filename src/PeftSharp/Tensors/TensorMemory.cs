using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tensors;

/// <summary>
/// Raw access to the bytes of a contiguous CPU tensor, for copying to and from files without
/// an intermediate managed array.
/// </summary>
internal static unsafe class TensorMemory
{
    /// <summary>Copies are done in pieces of at most this many bytes, because spans are int-indexed.</summary>
    private const int ChunkBytes = 1 << 30;

    /// <summary>
    /// The address of the first byte of a contiguous CPU tensor (null when it has no elements).
    /// TorchSharp exposes data only through <c>Tensor.bytes</c>, which refuses tensors over 2 GiB,
    /// so take the span of the first element and do the bounds checking ourselves.
    /// </summary>
    public static byte* DataPointer(Tensor tensor)
    {
        if (tensor.device_type != DeviceType.CPU || !tensor.is_contiguous())
            throw new ArgumentException("expected a contiguous CPU tensor", nameof(tensor));
        if (tensor.numel() == 0) return null;
        using var flat = tensor.view(-1);
        using var first = flat.narrow(0, 0, 1);
        // The span points into native memory, so taking its address pins nothing and stays valid
        // for as long as the tensor's storage lives.
        fixed (byte* pointer = first.bytes) return pointer;
    }

    /// <summary>Copies <paramref name="length"/> bytes from <paramref name="source"/> into the tensor's memory.</summary>
    public static void CopyInto(Tensor destination, byte* source, long length)
    {
        var expected = destination.numel() * destination.element_size();
        if (length != expected)
            throw new ArgumentException($"tensor holds {expected} bytes, not {length}", nameof(length));
        var target = DataPointer(destination);
        for (long done = 0; done < length; done += ChunkBytes)
        {
            var count = (int)Math.Min(ChunkBytes, length - done);
            new ReadOnlySpan<byte>(source + done, count).CopyTo(new Span<byte>(target + done, count));
        }
    }

    /// <summary>Writes the bytes of a contiguous CPU tensor to a stream.</summary>
    public static void WriteTo(Tensor tensor, Stream stream)
    {
        var length = tensor.numel() * tensor.element_size();
        var source = DataPointer(tensor);
        for (long done = 0; done < length; done += ChunkBytes)
        {
            var count = (int)Math.Min(ChunkBytes, length - done);
            stream.Write(new ReadOnlySpan<byte>(source + done, count));
        }
    }
}
