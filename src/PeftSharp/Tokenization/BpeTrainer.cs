using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace PeftSharp.Tokenization;

/// <summary>
/// Trains a byte-level BPE tokenizer the way GPT-2's was made: split text with GPT-2's pre-tokenizer regex, spell
/// each piece in GPT-2's byte alphabet, then repeatedly merge the most frequent adjacent pair (ties broken by the
/// pair's text, so runs repeat). Writes a standard Hugging Face <c>tokenizer.json</c> that any HF-compatible
/// tokenizer (and <see cref="ModelTokenizer"/>) reads. For models trained from scratch, such as the demo's.
/// </summary>
public static class BpeTrainer
{
    /// <summary>GPT-2's end-of-text token, added to every trained vocabulary.</summary>
    public const string EndOfText = "<|endoftext|>";

    static readonly Regex Gpt2Pattern = new(SplitStep.Gpt2Pattern, RegexOptions.Compiled);

    /// <summary>GPT-2's reversible byte → printable character table.</summary>
    public static string[] ByteAlphabet()
    {
        var direct = new HashSet<int>(Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range(0xA1, 0xAC - 0xA1 + 1)).Concat(Enumerable.Range(0xAE, 0xFF - 0xAE + 1)));
        var symbols = new string[256];
        int shifted = 0;
        for (int b = 0; b < 256; b++) symbols[b] = ((char)(direct.Contains(b) ? b : 256 + shifted++)).ToString();
        return symbols;
    }

    /// <summary>Learns <paramref name="merges"/> merges; returns the vocabulary (bytes, then merges, then &lt;|endoftext|&gt;) and the merge list.</summary>
    public static (Dictionary<string, int> Vocab, List<(string A, string B)> Merges) Train(string text, int merges)
    {
        var alphabet = ByteAlphabet();
        // Unique pre-tokenized pieces with their counts; each piece is a list of symbols.
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (Match m in Gpt2Pattern.Matches(text))
            counts[m.Value] = counts.GetValueOrDefault(m.Value) + 1;
        var words = counts.Select(kv => (Symbols: Encoding.UTF8.GetBytes(kv.Key).Select(b => alphabet[b]).ToList(), Count: kv.Value)).ToList();

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var s in alphabet.OrderBy(s => s[0])) vocab[s] = vocab.Count;
        var learned = new List<(string, string)>();
        for (int step = 0; step < merges; step++)
        {
            var pairs = new Dictionary<(string, string), long>();
            foreach (var (symbols, count) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    var key = (symbols[i], symbols[i + 1]);
                    pairs[key] = pairs.GetValueOrDefault(key) + count;
                }
            if (pairs.Count == 0) break;
            long bestCount = pairs.Values.Max();
            // Deterministic tie-break: among equally frequent pairs, the ordinally smallest text.
            var best = pairs.Where(kv => kv.Value == bestCount).Select(kv => kv.Key)
                        .OrderBy(k => k.Item1, StringComparer.Ordinal).ThenBy(k => k.Item2, StringComparer.Ordinal).First();
            string merged = best.Item1 + best.Item2;
            learned.Add(best);
            vocab.TryAdd(merged, vocab.Count);
            foreach (var (symbols, _) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == best.Item1 && symbols[i + 1] == best.Item2)
                    {
                        symbols[i] = merged;
                        symbols.RemoveAt(i + 1);
                    }
        }
        vocab[EndOfText] = vocab.Count;
        return (vocab, learned);
    }

    /// <summary>Writes tokenizer.json (GPT-2 style: ByteLevel pre-tokenizer and decoder, no added BOS) and tokenizer_config.json.</summary>
    public static void WriteTokenizer(string folder, Dictionary<string, int> vocab, IReadOnlyList<(string A, string B)> merges)
    {
        Directory.CreateDirectory(folder);
        var json = new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new[] { new { id = vocab[EndOfText], content = EndOfText, single_word = false, lstrip = false, rstrip = false, normalized = true, special = true } },
            ["normalizer"] = null,
            ["pre_tokenizer"] = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            ["post_processor"] = new { type = "ByteLevel", add_prefix_space = true, trim_offsets = false, use_regex = true },
            ["decoder"] = new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true },
            ["model"] = new Dictionary<string, object?>
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "", ["end_of_word_suffix"] = "",
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = merges.Select(m => new[] { m.A, m.B }).ToArray(),
            },
        };
        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), JsonSerializer.Serialize(json, options));
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["tokenizer_class"] = "GPT2Tokenizer",
            ["bos_token"] = EndOfText,
            ["eos_token"] = EndOfText,
            ["unk_token"] = EndOfText,
            ["model_max_length"] = 1024,
            ["add_prefix_space"] = false,
        }, options));
    }
}
