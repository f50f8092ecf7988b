using System.Buffers;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace PeftSharp.Tokenization;

/// <summary>
/// Hugging Face's BPE model as tokenizer.json files converted from SentencePiece use it (Llama 2, Mistral, Gemma):
/// no byte-level alphabet; characters missing from the vocabulary become their UTF-8 bytes as &lt;0xNN&gt; tokens
/// (byte_fallback); merges are applied by rank. Microsoft.ML.Tokenizers' BpeTokenizer has no byte fallback and its
/// SentencePieceTokenizer needs a tokenizer.model, so this model is written here; normalization, pre-tokenization and
/// decoding follow the file's own steps (<see cref="SentencePieceBpeSteps"/>).
/// </summary>
/// <remarks>
/// Merging uses a priority queue of adjacent pairs ordered by (merge rank, position), as HF's BPE does, so a long
/// text without pre-tokenization (Llama 2's files have none) costs O(n log n). Token offsets are not tracked:
/// every token reports the range of the text section it came from.
/// </remarks>
internal sealed class ByteFallbackBpeTokenizer : Tokenizer
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<int, string> _idToToken;
    private readonly Dictionary<(int, int), (int Rank, int Id)> _merges;
    private readonly int[]? _byteIds; // <0x00>..<0xFF>, when byte_fallback is on and all 256 exist
    private readonly int? _unkId;
    private readonly bool _fuseUnk, _ignoreMerges;
    private readonly SentencePieceBpeSteps _steps;
    private readonly AddedTokenMatcher _added;

    public ByteFallbackBpeTokenizer(Dictionary<string, int> vocab, IReadOnlyList<(string A, string B)> merges, bool byteFallback,
                                    string? unkToken, bool fuseUnk, bool ignoreMerges, SentencePieceBpeSteps steps,
                                    IReadOnlyDictionary<string, int> addedTokens, string source)
    {
        _vocab = vocab;
        _idToToken = [];
        foreach (var (token, id) in vocab) _idToToken.TryAdd(id, token);
        foreach (var (token, id) in addedTokens) _idToToken.TryAdd(id, token);
        _merges = new Dictionary<(int, int), (int, int)>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (a, b) = merges[rank];
            if (!vocab.TryGetValue(a, out int ia) || !vocab.TryGetValue(b, out int ib) || !vocab.TryGetValue(a + b, out int merged))
                throw new PeftSharpException($"{source}: merge \"{a} {b}\" uses a token that is not in the vocabulary.");
            _merges.TryAdd((ia, ib), (rank, merged));
        }
        if (byteFallback)
        {
            var ids = new int[256];
            bool all = true;
            for (int b = 0; b < 256 && all; b++) all = vocab.TryGetValue($"<0x{b:X2}>", out ids[b]);
            _byteIds = all ? ids : null;
        }
        _unkId = unkToken is not null && vocab.TryGetValue(unkToken, out int unk) ? unk : null;
        _fuseUnk = fuseUnk;
        _ignoreMerges = ignoreMerges;
        _steps = steps;
        _added = new AddedTokenMatcher(addedTokens);
    }

    public IReadOnlyDictionary<string, int> Vocabulary => _vocab;

    public string? IdToToken(int id) => _idToToken.GetValueOrDefault(id);

    /// <summary>Ids of <paramref name="text"/>: added tokens cut out verbatim, each other section normalized, pre-tokenized and merged.</summary>
    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        foreach (var (start, length, addedId) in _added.Sections(text))
        {
            if (addedId is int a) { ids.Add(a); continue; }
            string normalized = _steps.Normalize(text.Substring(start, length));
            foreach (string word in _steps.PreTokenize(normalized, firstSection: start == 0))
                EncodeWord(word, ids);
        }
        return ids;
    }

    private void EncodeWord(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(word, out int whole)) { output.Add(whole); return; }

        // Initial symbols: one per code point, or its UTF-8 bytes, or unk.
        var ids = new List<int>(word.Length);
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < word.Length;)
        {
            int len = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            string ch = word.Substring(i, len);
            i += len;
            if (_vocab.TryGetValue(ch, out int id)) { ids.Add(id); continue; }
            if (_byteIds is not null)
            {
                int n = Encoding.UTF8.GetBytes(ch, utf8);
                for (int b = 0; b < n; b++) ids.Add(_byteIds[utf8[b]]);
                continue;
            }
            if (_unkId is not int unk) throw new PeftSharpException($"the character '{ch}' is not in the vocabulary and the tokenizer has no unk_token or byte_fallback.");
            if (_fuseUnk && ids.Count > 0 && ids[^1] == unk) continue;
            ids.Add(unk);
        }

        int count = ids.Count;
        var sym = ids.ToArray();
        var prev = new int[count];
        var next = new int[count];
        var alive = new bool[count];
        for (int i = 0; i < count; i++) { prev[i] = i - 1; next[i] = i + 1 < count ? i + 1 : -1; alive[i] = true; }

        var queue = new PriorityQueue<(int Left, int Right, int LeftId, int RightId), (int Rank, int Pos)>();
        void Consider(int left)
        {
            if (left < 0 || next[left] < 0) return;
            int right = next[left];
            if (_merges.TryGetValue((sym[left], sym[right]), out var m)) queue.Enqueue((left, right, sym[left], sym[right]), (m.Rank, left));
        }
        for (int i = 0; i + 1 < count; i++) Consider(i);
        while (queue.TryDequeue(out var pair, out _))
        {
            var (left, right, leftId, rightId) = pair;
            if (!alive[left] || !alive[right] || next[left] != right || sym[left] != leftId || sym[right] != rightId) continue; // stale
            sym[left] = _merges[(leftId, rightId)].Id;
            alive[right] = false;
            next[left] = next[right];
            if (next[right] >= 0) prev[next[right]] = left;
            Consider(prev[left]);
            Consider(left);
        }
        for (int i = 0; i >= 0 && i < count; i = next[i]) output.Add(sym[i]);
    }

    /// <summary>Text of <paramref name="ids"/> through the file's decoder (▁ to space, byte tokens to UTF-8, strip).</summary>
    public override string Decode(IEnumerable<int> ids) =>
        _steps.Decode(ids.Select(id => _idToToken.TryGetValue(id, out var t) ? t : "").ToList());

    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        var list = ids.ToList();
        string text = Decode(list);
        if (text.Length > destination.Length) { idsConsumed = 0; charsWritten = 0; return OperationStatus.DestinationTooSmall; }
        text.AsSpan().CopyTo(destination);
        idsConsumed = list.Count;
        charsWritten = text.Length;
        return OperationStatus.Done;
    }

    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        string s = text ?? textSpan.ToString();
        var ids = Encode(s);
        var tokens = ids.Select(id => new EncodedToken(id, _idToToken.GetValueOrDefault(id) ?? "", new Range(0, s.Length))).ToList();
        return new EncodeResults<EncodedToken> { Tokens = tokens, NormalizedText = null, CharsConsumed = s.Length };
    }
}

/// <summary>Added tokens cut out of a text verbatim, leftmost and longest first, as HF's AddedVocabulary does.</summary>
internal sealed class AddedTokenMatcher
{
    private readonly System.Text.RegularExpressions.Regex? _regex;
    private readonly IReadOnlyDictionary<string, int> _tokens;

    public AddedTokenMatcher(IReadOnlyDictionary<string, int> tokens)
    {
        _tokens = tokens;
        // .NET alternation takes the first alternative that matches, so longest-first gives leftmost-longest.
        var alternatives = tokens.Keys.OrderByDescending(t => t.Length).ThenBy(t => t, StringComparer.Ordinal)
                                 .Select(System.Text.RegularExpressions.Regex.Escape).ToList();
        _regex = alternatives.Count == 0 ? null : new System.Text.RegularExpressions.Regex(string.Join('|', alternatives));
    }

    /// <summary>The text as sections: (start, length, id) for an added token, (start, length, null) for text between them.</summary>
    public List<(int Start, int Length, int? Id)> Sections(string text)
    {
        var sections = new List<(int, int, int?)>();
        int pos = 0;
        if (_regex is not null)
        {
            foreach (System.Text.RegularExpressions.ValueMatch m in _regex.EnumerateMatches(text))
            {
                if (m.Index > pos) sections.Add((pos, m.Index - pos, null));
                sections.Add((m.Index, m.Length, _tokens[text.Substring(m.Index, m.Length)]));
                pos = m.Index + m.Length;
            }
        }
        if (pos < text.Length) sections.Add((pos, text.Length - pos, null));
        return sections;
    }
}
