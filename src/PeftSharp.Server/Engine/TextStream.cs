
namespace PeftSharp.Server.Engine;

/// <summary>
/// Turns generated tokens into text deltas whose concatenation is the final text. A byte-level token can end in the
/// middle of a UTF-8 character: the decoder then shows U+FFFD at the end, and that tail is held back until the
/// character's remaining bytes arrive. Text that could be the start of a stop string is held back too, so a stop
/// string never reaches the client; when one appears, the text is cut before it.
/// </summary>
public sealed class TextStream(Func<IReadOnlyList<int>, string> decode, IReadOnlyList<string> stops)
{
    readonly List<int> ids = [];
    string emitted = "";

    /// <summary>Everything emitted so far (the concatenation of the deltas).</summary>
    public string Text => emitted;

    /// <summary>Adds a token; returns the text that may be sent now and whether a stop string ended the text.</summary>
    public (string Delta, bool Stopped) Push(int id)
    {
        ids.Add(id);
        string full = decode(ids);
        int stopAt = FindStop(full);
        if (stopAt >= 0) return (Advance(full[..stopAt]), true);
        string safe = full.TrimEnd('\uFFFD');
        safe = safe[..(safe.Length - HeldForStop(safe))];
        return (Advance(safe), false);
    }

    /// <summary>At the end: whatever was held back (a trailing partial character stays as U+FFFD, as the decoder writes it).</summary>
    public string Flush()
    {
        string full = decode(ids);
        int stopAt = FindStop(full);
        return Advance(stopAt >= 0 ? full[..stopAt] : full);
    }

    string Advance(string safe)
    {
        // Decoding is prefix-stable for the tokenizers here; if it ever is not, hold text back rather than contradict it.
        if (safe.Length <= emitted.Length || !safe.StartsWith(emitted, StringComparison.Ordinal)) return "";
        string delta = safe[emitted.Length..];
        emitted = safe;
        return delta;
    }

    int FindStop(string full)
    {
        int best = -1;
        foreach (var s in stops)
        {
            if (s.Length == 0) continue;
            // Emitted text never holds a whole stop string, so search only where a new one can end.
            int from = Math.Max(0, emitted.Length - s.Length + 1);
            int at = full.IndexOf(s, from, StringComparison.Ordinal);
            if (at >= 0 && (best < 0 || at < best)) best = at;
        }
        return best;
    }

    /// <summary>The length of the longest tail of <paramref name="text"/> that begins some stop string.</summary>
    int HeldForStop(string text)
    {
        int held = 0;
        foreach (var s in stops)
            for (int n = Math.Min(s.Length - 1, text.Length); n > held; n--)
                if (text.AsSpan(text.Length - n).SequenceEqual(s.AsSpan(0, n))) { held = n; break; }
        return held;
    }
}
