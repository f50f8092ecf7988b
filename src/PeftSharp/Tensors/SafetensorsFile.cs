using System.Buffers.Binary;
using System.Collections.ObjectModel;
using System.IO.MemoryMappedFiles;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tensors;

/// <summary>
/// A safetensors file opened for reading. <see cref="Open"/> validates the whole header before
/// anything trusts it; tensor bytes are then copied straight from a read-only memory map into
/// freshly allocated (or caller-supplied) tensors, so a weight is never held twice in managed memory.
/// Returned tensors own their memory and outlive the file. Reads only read the map, so they may run
/// concurrently; <see cref="Dispose"/> must not race them.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private readonly FileStream _stream;
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _data; // start of the data buffer (just after the header) in the mapped view
    private readonly long _fileLength;

    private SafetensorsFile(string path, FileStream stream, SafetensorsHeader header, long dataStart)
    {
        Path = path;
        _stream = stream;
        _fileLength = stream.Length;
        Tensors = new ReadOnlyDictionary<string, SafetensorsTensorInfo>(header.Tensors);
        Metadata = new ReadOnlyDictionary<string, string>(header.Metadata);

        _map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read,
            HandleInheritability.None, leaveOpen: true);
        try
        {
            _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            // The view starts at a page boundary; PointerOffset is where offset 0 of our request is.
            _data = pointer + _view.PointerOffset + dataStart;
        }
        catch
        {
            _view?.Dispose();
            _map.Dispose();
            throw;
        }
    }

    /// <summary>The path the file was opened with (used in error messages).</summary>
    public string Path { get; }

    /// <summary>Every tensor in the file, by name, in ordinal name order.</summary>
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors { get; }

    /// <summary>The header's <c>__metadata__</c> (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// Opens and validates a safetensors file. Any problem with the file, including one that
    /// would make a later read go wrong, is a <see cref="PeftSharpException"/> naming the file
    /// and, where it applies, the tensor.
    /// </summary>
    public static SafetensorsFile Open(string path)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; big-endian hosts are not supported");

        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, bufferSize: 1);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or IOException)
        {
            throw SafetensorsErrors.File(path, $"cannot open the file ({e.Message})");
        }

        try
        {
            var (header, dataStart) = ReadHeader(path, stream);
            return new SafetensorsFile(path, stream, header, dataStart);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    private static (SafetensorsHeader Header, long DataStart) ReadHeader(string path, FileStream stream)
    {
        var fileLength = stream.Length;
        if (fileLength < 8)
            throw SafetensorsErrors.File(path, $"file is {fileLength} bytes, too short for the 8-byte header length; expected a safetensors file");

        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        // Check against the file before allocating anything of that size.
        if (headerLength < 2)
            throw SafetensorsErrors.File(path, $"header length is {headerLength}; expected at least 2 bytes of JSON");
        if (headerLength > (ulong)(fileLength - 8))
            throw SafetensorsErrors.File(path, $"header length {headerLength} runs past the end of the {fileLength}-byte file; it is truncated or not a safetensors file");
        if (headerLength > SafetensorsHeader.MaxHeaderBytes)
            throw SafetensorsErrors.File(path, $"header length {headerLength} exceeds the {SafetensorsHeader.MaxHeaderBytes}-byte limit");

        var json = new byte[headerLength];
        stream.ReadExactly(json);
        var dataStart = 8 + (long)headerLength;
        return (SafetensorsHeader.Parse(path, json, fileLength - dataStart), dataStart);
    }

    /// <summary>
    /// Reads a tensor into a new tensor. With no arguments the result is on the CPU with the file's
    /// dtype and is filled by a single copy from the memory map; asking for another dtype or device
    /// converts afterwards (one extra copy, the file-typed CPU tensor being freed at once).
    /// </summary>
    public Tensor Read(string name, Device? device = null, ScalarType? dtype = null)
    {
        var info = Info(name);
        var tensor = torch.empty(info.ShapeNoCopy, info.ScalarType, torch.CPU);
        try
        {
            CopyBytes(info, tensor);
            var wantType = dtype ?? info.ScalarType;
            var wantDevice = device ?? torch.CPU;
            if (wantType == info.ScalarType && wantDevice.type == DeviceType.CPU) return tensor;

            var converted = tensor.to(wantType, wantDevice);
            if (!ReferenceEquals(converted, tensor)) tensor.Dispose();
            return converted;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Copies a tensor into an existing tensor of the same shape (any dtype, any device), e.g. a
    /// model parameter, without autograd recording it. A contiguous CPU destination of the file's
    /// dtype is filled straight from the memory map; otherwise a temporary CPU tensor is used.
    /// </summary>
    public void ReadInto(string name, Tensor destination)
    {
        var info = Info(name);
        if (!destination.shape.SequenceEqual(info.ShapeNoCopy))
            throw SafetensorsErrors.Tensor(Path, name,
                $"file has shape [{string.Join(", ", info.ShapeNoCopy)}] but the destination has shape [{string.Join(", ", destination.shape)}]");

        if (destination.device_type == DeviceType.CPU && destination.dtype == info.ScalarType && destination.is_contiguous())
        {
            CopyBytes(info, destination);
            return;
        }

        using var temporary = torch.empty(info.ShapeNoCopy, info.ScalarType, torch.CPU);
        CopyBytes(info, temporary);
        using (torch.no_grad())
        {
            destination.copy_(temporary);
        }
    }

    private SafetensorsTensorInfo Info(string name)
    {
        ObjectDisposedException.ThrowIf(_data == null, this);
        if (!Tensors.TryGetValue(name, out var info))
            throw SafetensorsErrors.Tensor(Path, name, "not in this file");
        return info;
    }

    private void CopyBytes(SafetensorsTensorInfo info, Tensor destination)
    {
        // A file shrunk by another process after Open would turn the mapped read into a SIGBUS
        // crash; this cheap check catches the common case (a racing rewrite can still slip through).
        if (_stream.Length < _fileLength)
            throw SafetensorsErrors.Tensor(Path, info.Name, $"file shrank from {_fileLength} to {_stream.Length} bytes since it was opened");
        TensorMemory.CopyInto(destination, _data + info.DataBegin, info.ByteLength);
    }

    /// <summary>Releases the memory-mapped view and closes the file.</summary>
    public void Dispose()
    {
        if (_data == null) return;
        _data = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
        _stream.Dispose();
    }
}
