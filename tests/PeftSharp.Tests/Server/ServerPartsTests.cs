using System.Text;
using PeftSharp.Models;
using PeftSharp.Server.Adapters;
using PeftSharp.Server.Engine;
using PeftSharp.Tests.Reference;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Server;

/// <summary>The server's pieces on their own: text streaming, path confinement, and rows of different lengths in one KV cache.</summary>
public sealed class ServerPartsTests
{
    /// <summary>Tokens that are single bytes, decoded as UTF-8 (a partial character decodes to U+FFFD, as byte-level BPE does).</summary>
    static string DecodeBytes(IReadOnlyList<int> ids) => Encoding.UTF8.GetString(ids.Select(i => (byte)i).ToArray());

    static List<string> Deltas(TextStream s, byte[] bytes)
    {
        var deltas = new List<string>();
        foreach (var b in bytes)
        {
            var (d, stopped) = s.Push(b);
            deltas.Add(d);
            if (stopped) return deltas;
        }
        deltas.Add(s.Flush());
        return deltas;
    }

    [Fact]
    public void DeltasNeverSplitACharacterAndConcatenateToTheText()
    {
        const string text = "héllo wörld € 𝄞!";
        var deltas = Deltas(new TextStream(DecodeBytes, []), Encoding.UTF8.GetBytes(text));
        Assert.Equal(text, string.Concat(deltas));
        Assert.All(deltas, d => Assert.DoesNotContain('\uFFFD', d));
        Assert.Contains("€", deltas); // the three bytes of € came out as one piece
    }

    [Fact]
    public void AnIncompleteCharacterAtTheEndComesOutAsTheDecoderWritesIt()
    {
        var bytes = Encoding.UTF8.GetBytes("ok €")[..^1];
        var deltas = Deltas(new TextStream(DecodeBytes, []), bytes);
        Assert.Equal(DecodeBytes(bytes.Select(b => (int)b).ToList()), string.Concat(deltas));
    }

    [Fact]
    public void StopStringsAreHeldBackThenCut()
    {
        var s = new TextStream(DecodeBytes, ["END", "xyz"]);
        var deltas = Deltas(s, Encoding.UTF8.GetBytes("abc ENxEND more"));
        Assert.Equal("abc ENx", string.Concat(deltas));
        // "EN" is held until "x" shows it is not "END"; "x" until "E" shows it is not "xyz"; the second "EN" never comes out.
        Assert.Equal(["a", "b", "c", " ", "", "", "EN", "x", "", ""], deltas);
    }

    [Fact]
    public void PathsOutsideTheAdapterFolderAreRefusedEvenThroughLinks()
    {
        string root = TinyCheckpoints.NewTempDirectory("peftsharp-paths-");
        try
        {
            string dir = Path.Combine(root, "adapters"), outside = Path.Combine(root, "outside");
            Directory.CreateDirectory(Path.Combine(dir, "good"));
            Directory.CreateDirectory(outside);
            File.WriteAllText(Path.Combine(outside, "adapter_config.json"), "{}");
            Directory.CreateSymbolicLink(Path.Combine(dir, "dirlink"), outside);
            Directory.CreateDirectory(Path.Combine(dir, "filelink"));
            File.CreateSymbolicLink(Path.Combine(dir, "filelink", "adapter_config.json"), Path.Combine(outside, "adapter_config.json"));
            Directory.CreateSymbolicLink(Path.Combine(dir, "innerlink"), Path.Combine(dir, "good"));
            var paths = new AdapterPaths(dir);
            Assert.Equal(Path.Combine(paths.Root, "good"), paths.Resolve("good"));
            Assert.Equal(Path.Combine(paths.Root, "good"), paths.Resolve(Path.Combine(dir, "good")));
            Assert.Equal(Path.Combine(paths.Root, "good"), paths.Resolve("innerlink")); // a link that stays inside is fine
            Assert.Null(paths.Resolve("../outside"));
            Assert.Null(paths.Resolve("good/../../outside"));
            Assert.Null(paths.Resolve(outside));
            Assert.Null(paths.Resolve("dirlink"));
            Assert.Null(paths.Resolve("filelink"));
            Assert.Null(paths.Resolve("/etc"));
            // The root itself may be reached through a link.
            string rootLink = Path.Combine(root, "rootlink");
            Directory.CreateSymbolicLink(rootLink, dir);
            Assert.Equal(Path.Combine(paths.Root, "good"), new AdapterPaths(rootLink).Resolve("good"));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    public static TheoryData<string> Families => new() { "gpt2", "llama" };

    /// <summary>Rows of different lengths joined into one cache (right-aligned, masked) give each row's logits alone.</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void RowsOfDifferentLengthsInOneCacheMatchEachRowAlone(string family)
    {
        string dir = TinyCheckpoints.NewTempDirectory();
        if (family == "gpt2") TinyCheckpoints.WriteGpt2(dir, new NaiveGpt2Config { VocabSize = 40, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 }, new TinyGpt2Options { Seed = 5 });
        else TinyCheckpoints.WriteLlama(dir, new NaiveLlamaConfig { ModelType = "llama", VocabSize = 40, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 32 }, new TinyLlamaOptions { Seed = 5 });
        using var model = ModelLoader.Load(dir);
        using var _ = no_grad();
        long[][] prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]];
        long[][] next = [[20, 21, 22], [23, 24, 25], [26, 27, 28]];

        // Alone: the whole sequence at once, no cache.
        var alone = prompts.Select((p, r) => Logits(model, [.. p, .. next[r]])).ToList();

        // Together: rows 0 and 1 start, row 2 joins after one step, row 1 leaves after two.
        using var batch = model.NewCache();
        foreach (var p in prompts.Take(2)) batch.AppendRows(Prefill(model, p));
        var got = new List<float[]>[] { [], [], [] };
        var live = new List<int> { 0, 1 };
        for (int step = 0; step < 3; step++)
        {
            if (step == 1) { batch.AppendRows(Prefill(model, prompts[2])); live.Add(2); }
            if (step == 2) { batch.SelectRows([0, 2]); live.Remove(1); }
            int s = step;
            var ids = tensor(live.Select(r => next[r][s - (r == 2 ? 1 : 0)]).ToArray()).view(live.Count, 1);
            var logits = model.Forward(ids, batch, batch.KeyMask(1, model.Device));
            for (int i = 0; i < live.Count; i++) got[live[i]].Add(logits[i, 0].data<float>().ToArray());
        }
        // Row r's k-th decode step predicted from prompt + next[..k+1].
        void Check(int row, int k, float[] actual)
        {
            int position = prompts[row].Length + k;
            var expected = alone[row][position];
            Assert.True(expected.Zip(actual).Max(p => Math.Abs(p.First - p.Second)) < 1e-4, $"{family} row {row} step {k}");
        }
        Check(0, 0, got[0][0]); Check(0, 1, got[0][1]); Check(0, 2, got[0][2]);
        Check(1, 0, got[1][0]); Check(1, 1, got[1][1]);
        Check(2, 0, got[2][0]); Check(2, 1, got[2][1]);
    }

    static KvCache Prefill(CausalLM model, long[] prompt)
    {
        var cache = model.NewCache();
        using var scope = NewDisposeScope();
        model.Forward(tensor(prompt).unsqueeze(0), cache);
        return cache;
    }

    static float[][] Logits(CausalLM model, long[] ids)
    {
        using var scope = NewDisposeScope();
        var logits = model.Forward(tensor(ids).unsqueeze(0))[0];
        return Enumerable.Range(0, ids.Length).Select(i => logits[i].data<float>().ToArray()).ToArray();
    }
}
