using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Google.Protobuf;

namespace PeftSharp.Tests.Tokenization;

/// <summary>
/// A tiny byte-level BPE vocabulary (the 256 byte symbols + a few merges), written in the formats Hugging Face
/// uses, and an independent, deliberately naive BPE to compute the expected ids.
/// </summary>
internal static class TinyBpe
{
    /// <summary>GPT-2's byte → character table, written out independently of the library.</summary>
    public static readonly string[] ByteSymbols = BuildByteSymbols();

    private static string[] BuildByteSymbols()
    {
        var printable = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range(0xA1, 0xAC - 0xA1 + 1)).Concat(Enumerable.Range(0xAE, 0xFF - 0xAE + 1)).ToHashSet();
        var symbols = new string[256];
        int shifted = 0;
        for (int b = 0; b < 256; b++) symbols[b] = ((char)(printable.Contains(b) ? b : 256 + shifted++)).ToString();
        return symbols;
    }

    /// <summary>Merges in rank order. "e l" ranks below "l l", so "elle" must come out as e|ll|e, not el|l|e.</summary>
    public static readonly (string A, string B)[] Merges =
    [
        ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("he", "ll"), ("hell", "o"),
        ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld"),
        ("Ġ", "Ġ"), ("Ċ", "Ċ"), ("Ã", "©"), ("e", "l"),
    ];

    /// <summary>Ids: byte symbols in GPT-2 order (printable first), then merge results, then extras.</summary>
    public static Dictionary<string, int> Vocab(params string[] extra)
    {
        var order = Enumerable.Range(0, 256).OrderBy(b => ByteSymbols[b][0] < 256 ? 0 : 1).ThenBy(b => ByteSymbols[b][0]).Select(b => ByteSymbols[b]);
        var tokens = order.Concat(Merges.Select(m => m.A + m.B)).Concat(extra);
        var vocab = new Dictionary<string, int>();
        foreach (var t in tokens) vocab.TryAdd(t, vocab.Count);
        return vocab;
    }

    public const int EndOfText = 1000, BeginOfText = 1001, Tool = 1002;

    public static object[] AddedTokens() =>
    [
        new { id = EndOfText, content = "<|endoftext|>", single_word = false, lstrip = false, rstrip = false, normalized = false, special = true },
        new { id = BeginOfText, content = "<|begin_of_text|>", single_word = false, lstrip = false, rstrip = false, normalized = false, special = true },
        new { id = Tool, content = "<tool>", single_word = false, lstrip = false, rstrip = false, normalized = false, special = false },
    ];

    public static object ByteLevelPreTokenizer(bool useRegex = true) => new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = useRegex };

    /// <summary>A tokenizer.json in the shape transformers saves (GPT-2-like unless told otherwise).</summary>
    public static Dictionary<string, object?> TokenizerJson(
        bool pairMerges = false, object? preTokenizer = null, object? postProcessor = null, object? normalizer = null,
        bool ignoreMerges = false, Dictionary<string, int>? vocab = null) => new()
    {
        ["version"] = "1.0",
        ["truncation"] = null,
        ["padding"] = null,
        ["added_tokens"] = AddedTokens(),
        ["normalizer"] = normalizer,
        ["pre_tokenizer"] = preTokenizer ?? ByteLevelPreTokenizer(),
        ["post_processor"] = postProcessor,
        ["decoder"] = new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true },
        ["model"] = new Dictionary<string, object?>
        {
            ["type"] = "BPE",
            ["dropout"] = null,
            ["unk_token"] = null,
            ["continuing_subword_prefix"] = "",
            ["end_of_word_suffix"] = "",
            ["fuse_unk"] = false,
            ["byte_fallback"] = false,
            ["ignore_merges"] = ignoreMerges,
            ["vocab"] = vocab ?? Vocab(),
            ["merges"] = pairMerges ? Merges.Select(m => new[] { m.A, m.B }).ToArray() : Merges.Select(m => $"{m.A} {m.B}").ToArray(),
        },
    };

    /// <summary>TemplateProcessing that prepends &lt;|begin_of_text|&gt;, as Llama 3's tokenizer.json does.</summary>
    public static object BosTemplate() => new
    {
        type = "TemplateProcessing",
        single = new object[] { new { SpecialToken = new { id = "<|begin_of_text|>", type_id = 0 } }, new { Sequence = new { id = "A", type_id = 0 } } },
        pair = new object[] { new { Sequence = new { id = "A", type_id = 0 } }, new { Sequence = new { id = "B", type_id = 1 } } },
        special_tokens = new Dictionary<string, object> { ["<|begin_of_text|>"] = new { id = "<|begin_of_text|>", ids = new[] { BeginOfText }, tokens = new[] { "<|begin_of_text|>" } } },
    };

    public static void WriteVocabAndMerges(TempDir dir)
    {
        dir.WriteJson("vocab.json", Vocab());
        dir.Write("merges.txt", "#version: 0.2\n" + string.Join("\n", Merges.Select(m => $"{m.A} {m.B}")) + "\n");
    }

    /// <summary>
    /// Expected ids, computed the slow obvious way: split with the GPT-2 regex, spell each word's UTF-8 bytes
    /// with <see cref="ByteSymbols"/>, then repeatedly merge the lowest-ranked adjacent pair (leftmost first).
    /// </summary>
    public static List<int> ReferenceEncode(string text, Dictionary<string, int>? vocab = null)
    {
        vocab ??= Vocab();
        var rank = Merges.Select((m, i) => (m, i)).ToDictionary(x => x.m, x => x.i);
        var ids = new List<int>();
        foreach (Match word in Regex.Matches(text, @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"))
        {
            var symbols = Encoding.UTF8.GetBytes(word.Value).Select(b => ByteSymbols[b]).ToList();
            while (true)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (rank.TryGetValue((symbols[i], symbols[i + 1]), out int r) && r < bestRank) (best, bestRank) = (i, r);
                if (best < 0) break;
                symbols[best] += symbols[best + 1];
                symbols.RemoveAt(best + 1);
            }
            ids.AddRange(symbols.Select(s => vocab[s]));
        }
        return ids;
    }

    public static int[] Ids(params string[] tokens)
    {
        var vocab = Vocab();
        return tokens.Select(t => vocab[t]).ToArray();
    }
}

/// <summary>
/// A tiny SentencePiece BPE model (Llama 2 layout: &lt;unk&gt; &lt;s&gt; &lt;/s&gt;, 256 byte pieces, then words),
/// serialized by hand as the ModelProto protobuf.
/// </summary>
internal static class TinySentencePiece
{
    public const int Unk = 0, Bos = 1, Eos = 2, FirstByte = 3;
    private const int Normal = 1, Unknown = 2, Control = 3, Byte = 6; // SentencePiece.Type

    /// <summary>Word pieces with scores: BPE merges the adjacent pair whose concatenation scores highest.</summary>
    public static readonly (string Piece, float Score)[] Words =
    [
        ("▁", -100), ("h", -100), ("e", -100), ("l", -100), ("o", -100), ("w", -100), ("r", -100), ("d", -100),
        ("ll", -1), ("▁h", -2), ("▁he", -3), ("▁hell", -4), ("▁hello", -5),
        ("▁w", -6), ("or", -7), ("▁wor", -8), ("▁worl", -9), ("▁world", -10),
    ];

    public static int IdOf(string piece) => FirstByte + 256 + Array.FindIndex(Words, w => w.Piece == piece);

    public static void Write(string path)
    {
        using var file = File.Create(path);
        var model = new CodedOutputStream(file);
        WritePiece(model, "<unk>", 0, Unknown);
        WritePiece(model, "<s>", 0, Control);
        WritePiece(model, "</s>", 0, Control);
        for (int b = 0; b < 256; b++) WritePiece(model, $"<0x{b:X2}>", 0, Byte);
        foreach (var (piece, score) in Words) WritePiece(model, piece, score, Normal);

        WriteMessage(model, 2, trainer => // TrainerSpec
        {
            trainer.WriteTag(3, WireFormat.WireType.Varint); trainer.WriteEnum(2); // model_type = BPE
            trainer.WriteTag(35, WireFormat.WireType.Varint); trainer.WriteBool(true); // byte_fallback
            trainer.WriteTag(40, WireFormat.WireType.Varint); trainer.WriteInt32(Unk);
            trainer.WriteTag(41, WireFormat.WireType.Varint); trainer.WriteInt32(Bos);
            trainer.WriteTag(42, WireFormat.WireType.Varint); trainer.WriteInt32(Eos);
        });
        WriteMessage(model, 3, normalizer => // NormalizerSpec, as in Llama 2's model
        {
            normalizer.WriteTag(1, WireFormat.WireType.LengthDelimited); normalizer.WriteString("identity");
            normalizer.WriteTag(3, WireFormat.WireType.Varint); normalizer.WriteBool(true); // add_dummy_prefix
            normalizer.WriteTag(4, WireFormat.WireType.Varint); normalizer.WriteBool(false); // remove_extra_whitespaces
            normalizer.WriteTag(5, WireFormat.WireType.Varint); normalizer.WriteBool(true); // escape_whitespaces
        });
        model.Flush();
    }

    private static void WritePiece(CodedOutputStream model, string piece, float score, int type) => WriteMessage(model, 1, p =>
    {
        p.WriteTag(1, WireFormat.WireType.LengthDelimited); p.WriteString(piece);
        p.WriteTag(2, WireFormat.WireType.Fixed32); p.WriteFloat(score);
        p.WriteTag(3, WireFormat.WireType.Varint); p.WriteEnum(type);
    });

    // A nested message is a length-delimited field holding the message's own bytes.
    private static void WriteMessage(CodedOutputStream output, int field, Action<CodedOutputStream> write)
    {
        using var buffer = new MemoryStream();
        var inner = new CodedOutputStream(buffer);
        write(inner);
        inner.Flush();
        output.WriteTag(field, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(buffer.ToArray()));
    }
}
