using static TorchSharp.torch;

namespace PeftSharp.Tensors;

/// <summary>
/// One tensor's entry in a safetensors header, already validated: the dtype is known,
/// the shape's byte size matches the offsets, and the range lies inside the file's data buffer.
/// </summary>
public sealed class SafetensorsTensorInfo
{
    internal SafetensorsTensorInfo(string name, string dtype, ScalarType scalarType, long[] shape, long dataBegin, long dataEnd)
    {
        Name = name;
        DType = dtype;
        ScalarType = scalarType;
        _shape = shape;
        DataBegin = dataBegin;
        DataEnd = dataEnd;
    }

    private readonly long[] _shape;

    /// <summary>The tensor's name (header key).</summary>
    public string Name { get; }

    /// <summary>The dtype as written in the header, e.g. "BF16".</summary>
    public string DType { get; }

    /// <summary>The TorchSharp type a plain <c>Read</c> returns.</summary>
    public ScalarType ScalarType { get; }

    /// <summary>A copy of the shape, so callers cannot change what later reads allocate.</summary>
    public long[] Shape => (long[])_shape.Clone();

    /// <summary>Start of the tensor's bytes, relative to the start of the data buffer (after the header).</summary>
    public long DataBegin { get; }

    /// <summary>End (exclusive) of the tensor's bytes, relative to the start of the data buffer.</summary>
    public long DataEnd { get; }

    /// <summary>Size of the tensor's data in bytes.</summary>
    public long ByteLength => DataEnd - DataBegin;

    internal long[] ShapeNoCopy => _shape;

    /// <summary>Name, dtype and shape, for messages.</summary>
    public override string ToString() => $"{Name}: {DType}[{string.Join(", ", _shape)}]";
}
