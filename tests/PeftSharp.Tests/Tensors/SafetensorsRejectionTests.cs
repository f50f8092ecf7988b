using PeftSharp.Tensors;
using TorchSharp;
using static PeftSharp.Tests.Tensors.SafetensorsBytes;

namespace PeftSharp.Tests.Tensors;

/// <summary>
/// Bad files must fail at <see cref="SafetensorsFile.Open"/> with a one-line <see cref="PeftSharpException"/>
/// naming the file (and the tensor, where one is to blame): never a crash, an out-of-range read or a huge allocation.
/// </summary>
public class SafetensorsRejectionTests : IDisposable
{
    private readonly TempDir _folder = new();

    public void Dispose() => _folder.Dispose();

    private static PeftSharpException Rejects(string path, params string[] mentions)
    {
        var error = Assert.Throws<PeftSharpException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(Path.GetFileName(path), error.Message);
        foreach (var mention in mentions) Assert.Contains(mention, error.Message);
        Assert.DoesNotContain('\n', error.Message);
        return error;
    }

    private string Bad(string json, byte[]? data = null, ulong? headerLength = null) =>
        Write(_folder, "bad.safetensors", json, data, headerLength);

    [Fact]
    public void TruncatedFile()
    {
        var path = _folder.File("cut.safetensors");
        using (var a = torch.ones(4))
        using (var b = torch.ones(4))
            SafetensorsWriter.Save(path, [new("a", a), new("b", b)]);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^5]); // cut inside b's data

        Rejects(path, "\"b\"", "truncated");
    }

    [Fact]
    public void FileShorterThanEightBytes() => Rejects(Write5Bytes(), "5 bytes");

    private string Write5Bytes()
    {
        var path = _folder.File("short.safetensors");
        File.WriteAllBytes(path, [1, 0, 0, 0, 0]);
        return path;
    }

    [Fact]
    public void EmptyFile()
    {
        var path = _folder.File("empty.safetensors");
        File.WriteAllBytes(path, []);
        Rejects(path, "0 bytes");
    }

    [Fact]
    public void HeaderLengthPastTheEnd() => Rejects(Bad("{}", headerLength: 1000), "1000");

    [Fact]
    public void HeaderLengthAbsurd() => Rejects(Bad("{}", headerLength: ulong.MaxValue), ulong.MaxValue.ToString());

    [Fact]
    public void HeaderLengthTooSmall() => Rejects(Bad("{}", headerLength: 1), "at least 2");

    [Fact]
    public void InvalidJson() => Rejects(Bad("""{"a": {"dtype": "F32", """ + "    "), "not valid JSON");

    [Fact]
    public void InvalidUtf8() => Rejects(WriteRawHeader([(byte)'{', (byte)'"', 0xFF, 0xFE, (byte)'"', (byte)':', (byte)'1', (byte)'}']), "not valid JSON");

    private string WriteRawHeader(byte[] header)
    {
        var path = _folder.File("raw.safetensors");
        File.WriteAllBytes(path, [(byte)header.Length, 0, 0, 0, 0, 0, 0, 0, .. header]);
        return path;
    }

    [Fact]
    public void HeaderNotAnObject() => Rejects(Bad("[1, 2]"), "JSON object");

    [Fact]
    public void OffsetsOutOfRange() =>
        Rejects(Bad("""{"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}""", new byte[8]), "\"w\"", "[0, 400]");

    [Fact]
    public void OffsetsBeyondSixtyThreeBits() =>
        Rejects(Bad("""{"w": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, 18446744073709551615]}}""", new byte[8]), "\"w\"");

    [Fact]
    public void OffsetsEndBeforeBegin() =>
        Rejects(Bad("""{"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}}""", new byte[8]), "\"w\"", "[4, 2]");

    [Fact]
    public void OverlappingOffsets() =>
        Rejects(Bad("""
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
            """, new byte[12]), "\"a\"", "\"b\"", "overlap");

    [Fact]
    public void ShapeDisagreesWithOffsets() =>
        Rejects(Bad("""{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}""", new byte[8]), "\"w\"", "12 bytes", "8");

    [Fact]
    public void ShapeProductOverflows() =>
        Rejects(Bad("""{"w": {"dtype": "F32", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 8]}}""", new byte[8]), "\"w\"", "too large");

    [Fact]
    public void HugeShapeFromATinyFile() =>
        Rejects(Bad("""{"w": {"dtype": "U8", "shape": [1000000000000, 1000000], "data_offsets": [0, 8]}}""", new byte[8]), "\"w\"");

    [Fact]
    public void ZeroDimensionDoesNotHideAnOverflowingShape() =>
        Rejects(Bad("""{"w": {"dtype": "F32", "shape": [0, 1099511627776, 1099511627776], "data_offsets": [0, 0]}}"""), "\"w\"", "too large");

    [Fact]
    public void NegativeDimension() =>
        Rejects(Bad("""{"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}""", new byte[8]), "\"w\"", "non-negative");

    [Fact]
    public void FractionalDimension() =>
        Rejects(Bad("""{"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}""", new byte[8]), "\"w\"", "non-negative");

    [Fact]
    public void UnknownDType() =>
        Rejects(Bad("""{"w": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}}""", new byte[8]), "\"w\"", "F8_E4M3");

    [Theory]
    [InlineData("dtype")]
    [InlineData("shape")]
    [InlineData("data_offsets")]
    public void MissingField(string field)
    {
        var fields = new Dictionary<string, string> { ["dtype"] = "\"U8\"", ["shape"] = "[2]", ["data_offsets"] = "[0, 2]" };
        fields.Remove(field);
        var json = "{\"w\": {" + string.Join(", ", fields.Select(p => $"\"{p.Key}\": {p.Value}")) + "}}";
        Rejects(Bad(json, new byte[2]), "\"w\"", field);
    }

    [Fact]
    public void DuplicateTensorName() =>
        Rejects(Bad("""
            {"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
             "w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}
            """, new byte[2]), "\"w\"", "twice");

    [Fact]
    public void NonStringMetadata() =>
        Rejects(Bad("""{"__metadata__": {"epoch": 3}}"""), "epoch");

    [Fact]
    public void ControlCharactersInNamesStayOnOneLine()
    {
        var error = Rejects(Bad("""{"evil\nname": {"dtype": "X", "shape": [], "data_offsets": [0, 0]}}"""));
        Assert.Contains("evil\\u000aname", error.Message);
    }

    [Fact]
    public void MissingFile()
    {
        var path = _folder.File("absent.safetensors");
        var error = Assert.Throws<PeftSharpException>(() => SafetensorsFile.Open(path));
        Assert.Contains("absent.safetensors", error.Message);
    }

    [Fact]
    public void ReadingAnUnknownTensorOrIntoTheWrongShape()
    {
        var path = _folder.File("ok.safetensors");
        using (var w = torch.ones(2, 3))
            SafetensorsWriter.Save(path, [new("w", w)]);
        using var file = SafetensorsFile.Open(path);

        var missing = Assert.Throws<PeftSharpException>(() => file.Read("nope"));
        Assert.Contains("ok.safetensors", missing.Message);
        Assert.Contains("\"nope\"", missing.Message);

        using var wrong = torch.zeros(3, 2);
        var shape = Assert.Throws<PeftSharpException>(() => file.ReadInto("w", wrong));
        Assert.Contains("ok.safetensors", shape.Message);
        Assert.Contains("[2, 3]", shape.Message);
        Assert.Contains("[3, 2]", shape.Message);
    }

    [Fact]
    public void ReadingAfterDisposeFailsCleanly()
    {
        var path = _folder.File("ok.safetensors");
        using (var w = torch.ones(2))
            SafetensorsWriter.Save(path, [new("w", w)]);
        var file = SafetensorsFile.Open(path);
        file.Dispose();
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.Read("w"));
    }
}
