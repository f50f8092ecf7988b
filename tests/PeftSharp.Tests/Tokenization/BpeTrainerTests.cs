using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

public class BpeTrainerTests
{
    [Fact]
    public void MergesTheMostFrequentPairFirstAndRoundTrips()
    {
        // Pieces: "aaab" ×1, " aaab" ×2 ... counted by hand: the pair (a, a) occurs 2 per "aaab"-piece.
        const string text = "aaab aaab aaab xy";
        var (vocab, merges) = BpeTrainer.Train(text, 3);
        // (a,a) appears 2×3 = 6 times, (a,b) 3 times, (Ġ,a) 2 times: the first merge is a+a.
        Assert.Equal(("a", "a"), merges[0]);
        // After it, "aaab" is [aa, a, b]: (aa, a) 3 times, (a, b) 3 times → tie broken by ordinal text: ("a","b") < ("aa","a").
        Assert.Equal(("a", "b"), merges[1]);
        // Then "aaab" is [aa, ab] in all three pieces: (aa, ab) ×3 beats (Ġ, aa) ×2.
        Assert.Equal(("aa", "ab"), merges[2]);
        Assert.Equal(256 + 3 + 1, vocab.Count);
        Assert.Equal(vocab.Count - 1, vocab[BpeTrainer.EndOfText]);

        using var dir = new TempDir();
        BpeTrainer.WriteTokenizer(dir.Path, vocab, merges);
        var tok = ModelTokenizer.Load(dir.Path);
        foreach (var s in new[] { text, "Ünïcödé and\nnewlines  ", "ROMEO: aaab!" })
            Assert.Equal(s, tok.Decode(tok.Encode(s)));
        Assert.Equal([vocab["aaab"]], tok.Encode("aaab"));
        Assert.Equal([vocab["aa"], vocab["a"]], tok.Encode("aaa"));
        Assert.Equal(vocab[BpeTrainer.EndOfText], tok.EosTokenId);
    }
}
