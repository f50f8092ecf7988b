using PeftSharp.Tensors;
using TorchSharp;
using static PeftSharp.Tests.Tensors.SafetensorsBytes;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tensors;

public class SafetensorsRoundTripTests : IDisposable
{
    private readonly TempDir _folder = new();

    public void Dispose() => _folder.Dispose();

    /// <summary>
    /// One case per dtype: the file's dtype name, the TorchSharp type, a shape, the raw little-endian bytes,
    /// and the element values those bytes mean (checked after converting to a wide type, so a wrong
    /// dtype mapping, e.g. BF16 read as F16, fails even though the bytes round-trip).
    /// </summary>
    public static TheoryData<string, ScalarType, long[], byte[], double[]> Cases() => new()
    {
        { "F64", ScalarType.Float64, [2, 2], Doubles(1.5, -2.25, 1e300, double.Epsilon), [1.5, -2.25, 1e300, double.Epsilon] },
        { "F32", ScalarType.Float32, [2, 3], Floats(1.5f, -2.25f, float.MaxValue, float.NegativeInfinity, 0f, 1e-45f),
            [1.5, -2.25, float.MaxValue, double.NegativeInfinity, 0, 1e-45f] },
        // 1, -2, 0.5, 65504 (largest half), 2^-24 (smallest subnormal half), +inf.
        { "F16", ScalarType.Float16, [3, 2], UInt16s(0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x7C00),
            [1, -2, 0.5, 65504, Math.Pow(2, -24), double.PositiveInfinity] },
        // 1, -2, 3.140625, largest bf16 (0x7F7F -> 0x7F7F0000), 2^-133 (smallest subnormal bf16), -inf.
        { "BF16", ScalarType.BFloat16, [2, 3], UInt16s(0x3F80, 0xC000, 0x4049, 0x7F7F, 0x0001, 0xFF80),
            [1, -2, 3.140625, 3.3895313892515355e38, Math.Pow(2, -133), double.NegativeInfinity] },
        { "I64", ScalarType.Int64, [4], Int64s(long.MinValue, -1, 0, long.MaxValue), [long.MinValue, -1, 0, long.MaxValue] },
        { "I32", ScalarType.Int32, [2, 2], Int32s(int.MinValue, -7, 123456789, int.MaxValue), [int.MinValue, -7, 123456789, int.MaxValue] },
        { "I16", ScalarType.Int16, [4], Int16s(short.MinValue, -1, 12345, short.MaxValue), [short.MinValue, -1, 12345, short.MaxValue] },
        { "I8", ScalarType.Int8, [4], [0x80, 0xFF, 0x00, 0x7F], [-128, -1, 0, 127] },
        { "U8", ScalarType.Byte, [2, 2], [0, 1, 128, 255], [0, 1, 128, 255] },
        { "BOOL", ScalarType.Bool, [2, 2], [1, 0, 0, 1], [1, 0, 0, 1] },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryDTypeRoundTripsBitExactly(string dtypeName, ScalarType type, long[] shape, byte[] raw, double[] values)
    {
        var path = _folder.File("t.safetensors");
        using (var original = FromRaw(type, shape, raw))
            SafetensorsWriter.Save(path, [new("x", original)]);

        using var file = SafetensorsFile.Open(path);
        var info = file.Tensors["x"];
        Assert.Equal(dtypeName, info.DType);
        Assert.Equal(type, info.ScalarType);
        Assert.Equal(shape, info.Shape);
        Assert.Equal(raw.Length, info.ByteLength);

        using var loaded = file.Read("x");
        Assert.Equal(type, loaded.dtype);
        Assert.Equal(shape, loaded.shape);
        Assert.Equal(raw, Raw(loaded));

        // Bool -> float64 gives 0/1; integers up to 2^53 and all these floats convert exactly.
        using var wide = loaded.to(type == ScalarType.Int64 ? ScalarType.Int64 : ScalarType.Float64);
        if (type == ScalarType.Int64)
            Assert.Equal(values.Select(v => (long)v), wide.data<long>().ToArray());
        else
            Assert.Equal(values, wide.data<double>().ToArray());
    }

    [Fact]
    public void ScalarAndEmptyTensorsRoundTrip()
    {
        var path = _folder.File("t.safetensors");
        using (var scalar = torch.tensor(7.5f))
        using (var empty = torch.zeros(0, 3))
            SafetensorsWriter.Save(path, [new("scalar", scalar), new("empty", empty)]);

        using var file = SafetensorsFile.Open(path);
        using var s = file.Read("scalar");
        using var e = file.Read("empty");
        Assert.Empty(s.shape);
        Assert.Equal(7.5f, s.item<float>());
        Assert.Equal([0L, 3L], e.shape);
    }

    [Fact]
    public void MetadataRoundTrips()
    {
        var path = _folder.File("t.safetensors");
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode \"quoted\" a+b<c>", ["empty"] = "" };
        using (var t = torch.ones(2))
            SafetensorsWriter.Save(path, [new("w", t)], metadata);

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(metadata.OrderBy(p => p.Key), file.Metadata.OrderBy(p => p.Key));
    }

    [Fact]
    public void NoMetadataMeansEmptyMetadata()
    {
        var path = _folder.File("t.safetensors");
        using (var t = torch.ones(2))
            SafetensorsWriter.Save(path, [new("w", t)]);
        using var file = SafetensorsFile.Open(path);
        Assert.Empty(file.Metadata);
    }

    [Fact]
    public void NonContiguousTensorsAreWrittenInLogicalOrder()
    {
        var path = _folder.File("t.safetensors");
        using (var matrix = torch.arange(6, dtype: ScalarType.Float32).reshape(2, 3))
        using (var transposed = matrix.t())
            SafetensorsWriter.Save(path, [new("t", transposed)]);

        using var file = SafetensorsFile.Open(path);
        using var loaded = file.Read("t");
        Assert.Equal([3L, 2L], loaded.shape);
        Assert.Equal([0f, 3f, 1f, 4f, 2f, 5f], loaded.data<float>().ToArray());
    }

    [Fact]
    public void ReadConvertsDTypeWhenAsked()
    {
        var path = _folder.File("t.safetensors");
        using (var t = FromRaw(ScalarType.BFloat16, [2], UInt16s(0x3FC0, 0xC020))) // 1.5, -2.5
            SafetensorsWriter.Save(path, [new("w", t)]);

        using var file = SafetensorsFile.Open(path);
        using var loaded = file.Read("w", torch.CPU, ScalarType.Float32);
        Assert.Equal(ScalarType.Float32, loaded.dtype);
        Assert.Equal([1.5f, -2.5f], loaded.data<float>().ToArray());
    }

    [Fact]
    public void ReadIntoFillsAnExistingTensorOfTheSameDType()
    {
        var path = _folder.File("t.safetensors");
        using (var t = torch.tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2))
            SafetensorsWriter.Save(path, [new("w", t)]);

        using var file = SafetensorsFile.Open(path);
        using var parameter = new TorchSharp.Modules.Parameter(torch.zeros(2, 2), requires_grad: true);
        file.ReadInto("w", parameter);
        Assert.Equal([1f, 2f, 3f, 4f], parameter.detach().data<float>().ToArray());
        Assert.True(parameter.requires_grad);
    }

    [Fact]
    public void ReadIntoConvertsToTheDestinationDType()
    {
        var path = _folder.File("t.safetensors");
        using (var t = torch.tensor(new float[] { 1.5f, -2.5f, 3 }))
            SafetensorsWriter.Save(path, [new("w", t)]);

        using var file = SafetensorsFile.Open(path);
        using var parameter = new TorchSharp.Modules.Parameter(torch.zeros(3, dtype: ScalarType.BFloat16), requires_grad: true);
        file.ReadInto("w", parameter);
        Assert.Equal(UInt16s(0x3FC0, 0xC020, 0x4040), Raw(parameter.detach()));
    }

    [Fact]
    public void ReadIntoANonContiguousViewWritesThroughTheView()
    {
        var path = _folder.File("t.safetensors");
        using (var t = torch.tensor(new float[] { 1, 2, 3, 4, 5, 6 }).reshape(3, 2))
            SafetensorsWriter.Save(path, [new("w", t)]);

        using var file = SafetensorsFile.Open(path);
        using var storage = torch.zeros(2, 3);
        using var view = storage.t(); // shape [3, 2], not contiguous
        file.ReadInto("w", view);
        Assert.Equal([1f, 3f, 5f, 2f, 4f, 6f], storage.data<float>().ToArray());
    }

    [Fact]
    public void SavingReplacesTheFileAndLeavesNoTemporaryFiles()
    {
        var path = _folder.File("t.safetensors");
        using (var a = torch.ones(3))
            SafetensorsWriter.Save(path, [new("a", a)]);
        using (var b = torch.zeros(2))
            SafetensorsWriter.Save(path, [new("b", b)]);

        Assert.Equal(["t.safetensors"], Directory.GetFiles(_folder.Path).Select(Path.GetFileName));
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["b"], file.Tensors.Keys);
    }

    [Fact]
    public void AFailedSaveLeavesTheOldFileAlone()
    {
        var path = _folder.File("t.safetensors");
        using (var a = torch.ones(3))
            SafetensorsWriter.Save(path, [new("a", a)]);
        var before = File.ReadAllBytes(path);

        using var ok = torch.ones(2);
        using var complex = torch.zeros(2, dtype: ScalarType.ComplexFloat32);
        var error = Assert.Throws<ArgumentException>(() => SafetensorsWriter.Save(path, [new("ok", ok), new("c", complex)]));
        Assert.Contains("\"c\"", error.Message);
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Save(path, [new("x", ok), new("x", ok)]));

        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(_folder.Path));
    }

    [Fact]
    public void ReadingDoesNotAllocateAManagedArrayOfTheTensorsSize()
    {
        const int elements = 4 << 20; // 16 MiB of float32
        var path = _folder.File("big.safetensors");
        using (var big = torch.arange(elements, dtype: ScalarType.Float32))
            SafetensorsWriter.Save(path, [new("big", big)]);

        using var file = SafetensorsFile.Open(path);
        using var destination = torch.empty(elements);
        file.Read("big").Dispose(); // warm up (JIT, lazy initialisation)
        file.ReadInto("big", destination);

        var before = GC.GetAllocatedBytesForCurrentThread();
        using (var loaded = file.Read("big")) Assert.Equal(elements - 1, loaded[elements - 1].item<float>());
        file.ReadInto("big", destination);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.True(allocated < 1 << 20, $"reading allocated {allocated} managed bytes");
        Assert.Equal(elements - 1, destination[elements - 1].item<float>());
    }
}
