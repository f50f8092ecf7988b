using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace PeftSharp.Tokenization;

/// <summary>
/// The normalizer, pre-tokenizer and decoder of a tokenizer.json that is not byte-level (SentencePiece converted:
/// Llama 2, Mistral, Gemma), read into plain steps: Prepend/Replace/NF* normalizers, Metaspace/Split pre-tokenizers,
/// and Replace/ByteFallback/Fuse/Strip/Metaspace decoders, each doing what its Hugging Face namesake does.
/// </summary>
internal sealed class SentencePieceBpeSteps
{
    private readonly List<Func<string, string>> _normalizers = [];
    private readonly List<Func<List<string>, bool, List<string>>> _preTokenizers = [];
    private readonly List<Func<List<string>, List<string>>> _decoders = [];

    public static SentencePieceBpeSteps Read(string path, JsonElement root)
    {
        var steps = new SentencePieceBpeSteps();
        steps.AddNormalizer(path, root.Prop("normalizer"));
        steps.AddPreTokenizer(path, root.Prop("pre_tokenizer"));
        steps.AddDecoder(path, root.Prop("decoder"));
        return steps;
    }

    public string Normalize(string text)
    {
        foreach (var n in _normalizers) text = n(text);
        return text;
    }

    /// <summary>Words of a normalized section; <paramref name="firstSection"/>: it starts the text (Metaspace's prepend_scheme "first").</summary>
    public List<string> PreTokenize(string text, bool firstSection)
    {
        var words = new List<string> { text };
        foreach (var p in _preTokenizers) words = p(words, firstSection);
        return words;
    }

    public string Decode(List<string> tokens)
    {
        foreach (var d in _decoders) tokens = d(tokens);
        return string.Concat(tokens);
    }

    private void AddNormalizer(string path, JsonElement? normalizer)
    {
        if (normalizer is not { } n) return;
        switch (n.Str("type"))
        {
            case "Sequence":
                foreach (var inner in n.Prop("normalizers").Items()) AddNormalizer(path, inner);
                break;
            case "Prepend":
                string prefix = n.Str("prepend") ?? "";
                _normalizers.Add(s => s.Length == 0 ? s : prefix + s);
                break;
            case "Replace":
                _normalizers.Add(Replacer(path, n));
                break;
            case "NFC": _normalizers.Add(s => s.Normalize(NormalizationForm.FormC)); break;
            case "NFD": _normalizers.Add(s => s.Normalize(NormalizationForm.FormD)); break;
            case "NFKC": _normalizers.Add(s => s.Normalize(NormalizationForm.FormKC)); break;
            case "NFKD": _normalizers.Add(s => s.Normalize(NormalizationForm.FormKD)); break;
            default: throw Unsupported(path, $"normalizer '{n.Str("type")}'");
        }
    }

    private void AddPreTokenizer(string path, JsonElement? pre)
    {
        if (pre is not { } p) return;
        switch (p.Str("type"))
        {
            case "Sequence":
                foreach (var inner in p.Prop("pretokenizers").Items()) AddPreTokenizer(path, inner);
                break;
            case "Metaspace":
            {
                string replacement = p.Str("replacement") ?? "▁";
                string scheme = PrependScheme(p);
                bool split = p.Bool("split") ?? true;
                _preTokenizers.Add((words, first) => words.SelectMany(w =>
                {
                    w = w.Replace(" ", replacement);
                    if ((scheme == "always" || (scheme == "first" && first)) && !w.StartsWith(replacement, StringComparison.Ordinal)) w = replacement + w;
                    return split ? SplitBefore(w, replacement) : [w];
                }).ToList());
                break;
            }
            case "Split":
            {
                if (p.Bool("invert") == true) throw Unsupported(path, "Split pre_tokenizer with invert=true");
                var pattern = p.Prop("pattern");
                string regex = pattern?.Str("Regex") ?? (pattern?.Str("String") is { } s ? Regex.Escape(s)
                    : throw new PeftSharpException($"'{path}': Split pre_tokenizer has no pattern."));
                if (!Enum.TryParse(p.Str("behavior"), out SplitBehavior behavior)) throw Unsupported(path, $"Split behavior '{p.Str("behavior")}'");
                var step = new SplitStep(new Regex(regex, RegexOptions.CultureInvariant), behavior);
                _preTokenizers.Add((words, _) => words.SelectMany(w =>
                {
                    var pieces = new List<(int Offset, int Length)>();
                    step.Split(w, 0, w.Length, pieces);
                    return pieces.Select(x => w.Substring(x.Offset, x.Length));
                }).ToList());
                break;
            }
            case "Digits":
            {
                var step = new SplitStep(new Regex(p.Bool("individual_digits") == true ? @"\p{N}" : @"\p{N}+"), SplitBehavior.Isolated);
                _preTokenizers.Add((words, _) => words.SelectMany(w =>
                {
                    var pieces = new List<(int Offset, int Length)>();
                    step.Split(w, 0, w.Length, pieces);
                    return pieces.Select(x => w.Substring(x.Offset, x.Length));
                }).ToList());
                break;
            }
            default:
                throw Unsupported(path, $"pre_tokenizer '{p.Str("type")}'");
        }
    }

    private void AddDecoder(string path, JsonElement? decoder)
    {
        if (decoder is not { } d) return;
        switch (d.Str("type"))
        {
            case "Sequence":
                foreach (var inner in d.Prop("decoders").Items()) AddDecoder(path, inner);
                break;
            case "Replace":
                var replace = Replacer(path, d);
                _decoders.Add(tokens => tokens.Select(replace).ToList());
                break;
            case "ByteFallback":
                _decoders.Add(ByteFallback);
                break;
            case "Fuse":
                _decoders.Add(tokens => [string.Concat(tokens)]);
                break;
            case "Strip":
            {
                string content = d.Str("content") ?? " ";
                int start = d.Prop("start")?.GetInt32() ?? 0, stop = d.Prop("stop")?.GetInt32() ?? 0;
                _decoders.Add(tokens => tokens.Select(t => Strip(t, content, start, stop)).ToList());
                break;
            }
            case "Metaspace":
            {
                string replacement = d.Str("replacement") ?? "▁";
                bool stripFirst = PrependScheme(d) != "never";
                _decoders.Add(tokens => tokens.Select((t, i) =>
                {
                    t = t.Replace(replacement, " ");
                    return i == 0 && stripFirst && t.StartsWith(' ') ? t[1..] : t;
                }).ToList());
                break;
            }
            default:
                throw Unsupported(path, $"decoder '{d.Str("type")}'");
        }
    }

    // Metaspace's prepend_scheme ("always", "first", "never"); older files say add_prefix_space instead.
    private static string PrependScheme(JsonElement e) =>
        e.Str("prepend_scheme") ?? (e.Bool("add_prefix_space") == false ? "never" : "always");

    // Splits before each occurrence of the delimiter, which starts the next piece (HF's MergedWithNext).
    private static IEnumerable<string> SplitBefore(string text, string delimiter)
    {
        int start = 0;
        for (int i = text.IndexOf(delimiter, 1, StringComparison.Ordinal); i > 0; i = text.IndexOf(delimiter, i + 1, StringComparison.Ordinal))
        {
            yield return text[start..i];
            start = i;
        }
        if (start < text.Length) yield return text[start..];
    }

    private static Func<string, string> Replacer(string path, JsonElement e)
    {
        string content = e.Str("content") ?? "";
        var pattern = e.Prop("pattern");
        if (pattern?.Str("String") is { } literal) return s => s.Replace(literal, content, StringComparison.Ordinal);
        if (pattern?.Str("Regex") is { } regex)
        {
            var r = new CodePointRegex(new Regex(regex, RegexOptions.CultureInvariant));
            return s =>
            {
                var sb = new StringBuilder();
                int pos = 0;
                foreach (var (index, length) in r.Matches(s)) { sb.Append(s, pos, index - pos).Append(content); pos = index + length; }
                return sb.Append(s, pos, s.Length - pos).ToString();
            };
        }
        throw new PeftSharpException($"'{path}': Replace has no pattern.");
    }

    private static string Strip(string token, string content, int start, int stop)
    {
        int from = 0, to = token.Length;
        for (int i = 0; i < start && from < to && token.AsSpan(from).StartsWith(content); i++) from += content.Length;
        for (int i = 0; i < stop && to > from && token.AsSpan(from, to - from).EndsWith(content); i++) to -= content.Length;
        return token[from..to];
    }

    // Runs of <0xNN> tokens become the text of their bytes; bytes that are not valid UTF-8 become one U+FFFD each.
    private static List<string> ByteFallback(List<string> tokens)
    {
        var result = new List<string>();
        var bytes = new List<byte>();
        void Flush()
        {
            if (bytes.Count == 0) return;
            try { result.Add(new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes.ToArray())); }
            catch (DecoderFallbackException) { result.AddRange(bytes.Select(_ => "\uFFFD")); }
            bytes.Clear();
        }
        foreach (var t in tokens)
        {
            if (t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>' &&
                byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            {
                bytes.Add(b);
                continue;
            }
            Flush();
            result.Add(t);
        }
        Flush();
        return result;
    }

    private static PeftSharpException Unsupported(string path, string what) =>
        new($"'{path}' uses {what}, which PeftSharp's tokenizer loader does not support.");
}
