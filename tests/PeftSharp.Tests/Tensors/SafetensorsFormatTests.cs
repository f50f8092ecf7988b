using System.Text;
using PeftSharp.Tensors;
using TorchSharp;
using static PeftSharp.Tests.Tensors.SafetensorsBytes;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tensors;

/// <summary>The on-disk format, checked against hand-written bytes rather than against our own reader or writer.</summary>
public class SafetensorsFormatTests : IDisposable
{
    private readonly TempDir _folder = new();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void WriterProducesExactlyTheExpectedBytes()
    {
        var path = _folder.File("tiny.safetensors");
        using (var b = torch.tensor(new byte[] { 1, 2, 3 }))
        using (var a = torch.tensor(new float[] { 1f, -2f }))
            // Given out of order: the file must list and lay out tensors by name.
            SafetensorsWriter.Save(path, [new("b", b), new("a", a)], new Dictionary<string, string> { ["format"] = "pt" });

        const string json = """{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}""";
        Assert.Equal(138, json.Length);
        byte[] expected =
        [
            0x90, 0, 0, 0, 0, 0, 0, 0,                    // header length 144 = 138 bytes of JSON + 6 spaces
            .. Encoding.ASCII.GetBytes(json), .. "      "u8,
            0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0, // a = [1f, -2f], little-endian
            0x01, 0x02, 0x03,                              // b
        ];
        Assert.Equal(expected, File.ReadAllBytes(path));
    }

    [Fact]
    public void ReaderAcceptsAHandWrittenFileInHuggingFaceLayout()
    {
        // As Hugging Face writes it: larger alignment first, keys in another order, metadata last,
        // whitespace inside the JSON, and padding spaces; plus an unknown extra field, which is ignored.
        const string json = """
            { "w": {"data_offsets": [0, 8], "shape": [2, 1], "dtype": "F32"},
              "flag": {"dtype": "BOOL", "shape": [3], "data_offsets": [10, 13], "extra": 1},
              "h": {"shape": [1], "dtype": "BF16", "data_offsets": [8, 10]},
              "__metadata__": {"format": "pt"} }
            """ + "   ";
        byte[] data = [.. Floats(0.25f, -8f), 0x80, 0x3F, 1, 0, 1];
        var path = Write(_folder, "hf.safetensors", json, data);

        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["flag", "h", "w"], file.Tensors.Keys);
        Assert.Equal("pt", file.Metadata["format"]);

        using var w = file.Read("w");
        Assert.Equal([2L, 1L], w.shape);
        Assert.Equal([0.25f, -8f], w.data<float>().ToArray());
        using var h = file.Read("h");
        Assert.Equal(ScalarType.BFloat16, h.dtype);
        Assert.Equal(1f, h.to(ScalarType.Float32).item<float>());
        using var flag = file.Read("flag");
        Assert.Equal([true, false, true], flag.data<bool>().ToArray());

        var info = file.Tensors["h"];
        Assert.Equal(("BF16", 8L, 10L, 2L), (info.DType, info.DataBegin, info.DataEnd, info.ByteLength));
    }

    [Fact]
    public void WrittenHeaderIsPaddedSoDataStartsOnAnEightByteBoundary()
    {
        for (var nameLength = 1; nameLength <= 8; nameLength++)
        {
            var path = _folder.File($"p{nameLength}.safetensors");
            using (var t = torch.ones(1))
                SafetensorsWriter.Save(path, [new(new string('n', nameLength), t)]);
            var bytes = File.ReadAllBytes(path);
            var headerLength = BitConverter.ToUInt64(bytes, 0);
            Assert.Equal(0UL, headerLength % 8);
            Assert.Equal(8 + (long)headerLength + 4, bytes.Length);
        }
    }

    [Fact]
    public void BFloat16BitsConvertsLikePyTorch()
    {
        Assert.Equal(0x3F80, BFloat16Bits.FromFloat(1f));
        Assert.Equal(0xC000, BFloat16Bits.FromFloat(-2f));
        Assert.Equal(0x4049, BFloat16Bits.FromFloat(3.14159265f)); // rounds to 3.140625
        Assert.Equal(0x3F80, BFloat16Bits.FromFloat(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie -> even (down)
        Assert.Equal(0x3F82, BFloat16Bits.FromFloat(BitConverter.UInt32BitsToSingle(0x3F818000))); // tie -> even (up)
        Assert.Equal(0x7F80, BFloat16Bits.FromFloat(float.PositiveInfinity));
        Assert.True(float.IsNaN(BFloat16Bits.ToFloat(BFloat16Bits.FromFloat(float.NaN))));
        Assert.Equal(3.140625f, BFloat16Bits.ToFloat(0x4049));

        // And it agrees with libtorch's own float -> bfloat16 conversion.
        float[] values = [1f, -2f, 3.14159265f, 1e-30f, 65504f, 1.00390625f, 1.01171875f];
        using var t = torch.tensor(values).to(ScalarType.BFloat16);
        Assert.Equal(UInt16s(values.Select(BFloat16Bits.FromFloat).ToArray()), Raw(t));
    }
}
