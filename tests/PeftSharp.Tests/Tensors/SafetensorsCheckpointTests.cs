using System.Text.Json;
using PeftSharp.Tensors;
using TorchSharp;
using static PeftSharp.Tests.Tensors.SafetensorsBytes;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tensors;

public class SafetensorsCheckpointTests : IDisposable
{
    private readonly TempDir _folder = new();

    public void Dispose() => _folder.Dispose();

    /// <summary>Five tensors of 40, 16, 24, 8 and 80 bytes (name order: a, b, c, d, e).</summary>
    private static Dictionary<string, Tensor> Weights() => new()
    {
        ["a"] = torch.arange(10, dtype: ScalarType.Float32),
        ["b"] = torch.arange(8, dtype: ScalarType.Int16).reshape(2, 4),
        ["c"] = torch.tensor(new long[] { -1, 2, long.MaxValue }),
        ["d"] = FromRaw(ScalarType.BFloat16, [4], UInt16s(0x3F80, 0xC000, 0x4049, 0x0001)),
        ["e"] = torch.arange(20, dtype: ScalarType.Float32).reshape(4, 5),
    };

    private static void AssertSame(Dictionary<string, Tensor> expected, SafetensorsCheckpoint checkpoint)
    {
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), checkpoint.Tensors.Keys);
        foreach (var (name, tensor) in expected)
        {
            using var loaded = checkpoint.Read(name);
            Assert.Equal(tensor.dtype, loaded.dtype);
            Assert.Equal(tensor.shape, loaded.shape);
            Assert.Equal(Raw(tensor), Raw(loaded));
        }
    }

    [Fact]
    public void ShardedSaveAndLoadRoundTrip()
    {
        var weights = Weights();
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        // 48-byte shards: {a (40)}, {b (16), c (24), d (8)}, {e (80, alone since it is bigger than a shard)}.
        SafetensorsCheckpoint.SaveSharded(_folder.Path, weights, maxShardBytes: 48, metadata);

        Assert.Equal(
            ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json"],
            Directory.GetFiles(_folder.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        // The index, read as plain JSON.
        using (var index = JsonDocument.Parse(File.ReadAllBytes(_folder.File("model.safetensors.index.json"))))
        {
            Assert.Equal(168, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
            Assert.Equal("pt", index.RootElement.GetProperty("metadata").GetProperty("format").GetString());
            var map = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString());
            Assert.Equal(new Dictionary<string, string?>
            {
                ["a"] = "model-00001-of-00003.safetensors",
                ["b"] = "model-00002-of-00003.safetensors",
                ["c"] = "model-00002-of-00003.safetensors",
                ["d"] = "model-00002-of-00003.safetensors",
                ["e"] = "model-00003-of-00003.safetensors",
            }, map);
        }

        using var checkpoint = SafetensorsCheckpoint.Open(_folder.Path);
        Assert.Equal(3, checkpoint.Files.Count);
        Assert.Equal("168", checkpoint.Metadata["total_size"]);
        Assert.Equal("pt", checkpoint.Metadata["format"]);
        AssertSame(weights, checkpoint);

        // Each shard is a complete safetensors file with the metadata.
        using var shard = SafetensorsFile.Open(_folder.File("model-00002-of-00003.safetensors"));
        Assert.Equal(["b", "c", "d"], shard.Tensors.Keys);
        Assert.Equal("pt", shard.Metadata["format"]);

        using var destination = torch.zeros(4, 5, dtype: ScalarType.Float64);
        checkpoint.ReadInto("e", destination);
        Assert.Equal(Enumerable.Range(0, 20).Select(i => (double)i), destination.data<double>().ToArray());
    }

    [Fact]
    public void EverythingInOneShardIsSavedAsModelSafetensors()
    {
        var weights = Weights();
        SafetensorsCheckpoint.SaveSharded(_folder.Path, weights, maxShardBytes: 1 << 20);

        Assert.Equal(["model.safetensors"], Directory.GetFiles(_folder.Path).Select(Path.GetFileName));
        using (var checkpoint = SafetensorsCheckpoint.Open(_folder.Path))
            AssertSame(weights, checkpoint);
        using (var direct = SafetensorsCheckpoint.Open(_folder.File("model.safetensors")))
            AssertSame(weights, direct);
    }

    [Fact]
    public void SwitchingLayoutsRemovesTheOldOnesFiles()
    {
        var weights = Weights();
        File.WriteAllText(_folder.File("config.json"), "{}");
        SafetensorsCheckpoint.SaveSharded(_folder.Path, weights, maxShardBytes: 48);
        SafetensorsCheckpoint.SaveSharded(_folder.Path, weights, maxShardBytes: 1 << 20);
        Assert.Equal(["config.json", "model.safetensors"], Directory.GetFiles(_folder.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        SafetensorsCheckpoint.SaveSharded(_folder.Path, weights, maxShardBytes: 100);
        Assert.Equal(["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"],
            Directory.GetFiles(_folder.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        using var checkpoint = SafetensorsCheckpoint.Open(_folder.Path);
        AssertSame(weights, checkpoint);
    }

    [Fact]
    public void FolderWithoutWeightsNamesTheFilesLookedFor()
    {
        var error = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(_folder.Path));
        Assert.Contains(_folder.Path, error.Message);
        Assert.Contains("model.safetensors.index.json", error.Message);
        Assert.Contains("model.safetensors", error.Message);

        var missing = _folder.File("nowhere");
        error = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(missing));
        Assert.Contains("nowhere", error.Message);
    }

    private string WriteIndex(string weightMapJson)
    {
        var path = _folder.File("model.safetensors.index.json");
        File.WriteAllText(path, """{"metadata": {"total_size": 8}, "weight_map": """ + weightMapJson + "}");
        return path;
    }

    private void WriteShard(string name, params string[] tensors)
    {
        SafetensorsWriter.Save(_folder.File(name), tensors.Select(t => new KeyValuePair<string, Tensor>(t, torch.ones(2))));
    }

    [Theory]
    [InlineData("../model-00001-of-00001.safetensors")]
    [InlineData("sub/model-00001-of-00001.safetensors")]
    [InlineData("..\\model-00001-of-00001.safetensors")]
    [InlineData("/etc/passwd")]
    [InlineData("..")]
    [InlineData("")]
    public void ShardNamesMustStayInTheFolder(string shard)
    {
        // Real shards wait where an unchecked name would lead, so only the name check can stop the open.
        var checkpoint = Path.Combine(_folder.Path, "ckpt");
        Directory.CreateDirectory(Path.Combine(checkpoint, "sub"));
        WriteShard("model-00001-of-00001.safetensors", "w");
        File.Copy(_folder.File("model-00001-of-00001.safetensors"), Path.Combine(checkpoint, "sub", "model-00001-of-00001.safetensors"));
        File.WriteAllText(Path.Combine(checkpoint, "model.safetensors.index.json"),
            """{"weight_map": {"w": """ + JsonSerializer.Serialize(shard) + "}}");

        var error = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(checkpoint));
        Assert.Contains("model.safetensors.index.json", error.Message);
        Assert.Contains("\"w\"", error.Message);
        Assert.Contains("not a plain file name", error.Message);
    }

    [Fact]
    public void IndexPointingToAMissingShard()
    {
        WriteIndex("""{"w": "model-00001-of-00002.safetensors"}""");
        var error = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(_folder.Path));
        Assert.Contains("model.safetensors.index.json", error.Message);
        Assert.Contains("model-00001-of-00002.safetensors", error.Message);
        Assert.Contains("\"w\"", error.Message);
    }

    [Fact]
    public void IndexPuttingATensorInTheWrongShard()
    {
        WriteShard("model-00001-of-00002.safetensors", "a");
        WriteShard("model-00002-of-00002.safetensors", "b");
        WriteIndex("""{"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}""");
        var error = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(_folder.Path));
        Assert.Contains("model.safetensors.index.json", error.Message);
        Assert.Contains("model-00002-of-00002.safetensors", error.Message);
        Assert.Contains("\"a\"", error.Message);
    }

    [Fact]
    public void BadShardIsReportedByItsOwnName()
    {
        WriteShard("model-00001-of-00002.safetensors", "a");
        File.WriteAllBytes(_folder.File("model-00002-of-00002.safetensors"), [1, 2, 3]);
        WriteIndex("""{"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}""");
        var error = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(_folder.Path));
        Assert.Contains("model-00002-of-00002.safetensors", error.Message);
    }

    [Fact]
    public void InvalidIndexJson()
    {
        File.WriteAllText(_folder.File("model.safetensors.index.json"), "{\"weight_map\": ");
        var error = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(_folder.Path));
        Assert.Contains("model.safetensors.index.json", error.Message);
    }

    [Fact]
    public void UnknownTensorInACheckpoint()
    {
        SafetensorsCheckpoint.SaveSharded(_folder.Path, Weights(), maxShardBytes: 48);
        using var checkpoint = SafetensorsCheckpoint.Open(_folder.Path);
        var error = Assert.Throws<PeftSharpException>(() => checkpoint.Read("missing.weight"));
        Assert.Contains("\"missing.weight\"", error.Message);
        Assert.Contains(_folder.Path, error.Message);
    }
}
