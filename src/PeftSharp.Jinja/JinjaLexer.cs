using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.Jinja;

internal enum TokenKind { Text, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, End }

internal readonly record struct Token(TokenKind Kind, string Value, int Line);

/// <summary>
/// Splits a template into text and tag tokens the way Jinja2 does with the settings transformers uses for chat
/// templates: <c>trim_blocks</c> (the first newline after a block or comment tag is dropped), <c>lstrip_blocks</c>
/// (spaces and tabs before a block or comment tag at the start of a line are dropped), whitespace control with
/// <c>-</c> and <c>+</c>, newlines normalised to <c>\n</c> and one trailing newline of the template dropped.
/// </summary>
internal static class JinjaLexer
{
    const bool TrimBlocks = true, LstripBlocks = true;

    static readonly string[] Operators = ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "="];

    public static List<Token> Tokenize(string source)
    {
        source = Normalize(source);
        var lines = new LineCounter(source);
        var tokens = new List<Token>();
        int pos = 0;
        bool lineStarting = true;
        while (true)
        {
            int tag = FindTagStart(source, pos);
            string text = source[pos..(tag < 0 ? source.Length : tag)];
            if (tag < 0)
            {
                if (text.Length > 0) tokens.Add(new Token(TokenKind.Text, text, lines.At(pos)));
                break;
            }
            char kind = source[tag + 1];
            int p = tag + 2;
            char control = p < source.Length ? source[p] : '\0';
            if (control == '-') { text = TrimEndSpace(text); p++; }
            else if (control == '+') p++;
            else if (LstripBlocks && kind != '{') text = LstripToLineStart(text, lineStarting);
            if (text.Length > 0) tokens.Add(new Token(TokenKind.Text, text, lines.At(pos)));

            if (kind == '#')
            {
                int close = source.IndexOf("#}", p, StringComparison.Ordinal);
                if (close < 0) throw new JinjaException("the comment is not closed (no '#}')", lines.At(tag));
                // "-#}" eats the whitespace after the comment, "+#}" keeps the newline trim_blocks would drop.
                char sign = close > p ? source[close - 1] : '\0';
                (pos, lineStarting) = SkipAfterTag(source, close + 2, sign == '-', trim: TrimBlocks && sign != '+');
                continue;
            }

            if (kind == '%' && RawBegin.Match(source, tag) is { Success: true } raw)
            {
                pos = LexRawBlock(source, tokens, raw, lines, ref lineStarting);
                continue;
            }

            bool block = kind == '%';
            tokens.Add(new Token(block ? TokenKind.BlockBegin : TokenKind.VariableBegin, "", lines.At(tag)));
            int depth = 0;
            while (true)
            {
                while (p < source.Length && IsSpace(source[p])) p++;
                if (p >= source.Length)
                    throw new JinjaException($"the {(block ? "block" : "variable")} tag is not closed (no '{(block ? "%}" : "}}")}')", lines.At(tag));
                string end = block ? "%}" : "}}";
                if (depth == 0)
                {
                    bool minus = source[p] == '-' && Matches(source, p + 1, end);
                    bool plus = block && source[p] == '+' && Matches(source, p + 1, end);
                    if (minus || plus || Matches(source, p, end))
                    {
                        int after = p + (minus || plus ? 1 : 0) + 2;
                        tokens.Add(new Token(block ? TokenKind.BlockEnd : TokenKind.VariableEnd, "", lines.At(p)));
                        (pos, lineStarting) = SkipAfterTag(source, after, minus, trim: block && TrimBlocks && !plus);
                        break;
                    }
                }
                var token = LexExpressionToken(source, ref p, lines);
                if (token.Kind == TokenKind.Operator)
                {
                    if (token.Value is "(" or "[" or "{") depth++;
                    else if (token.Value is ")" or "]" or "}") depth = Math.Max(0, depth - 1);
                }
                tokens.Add(token);
            }
        }
        tokens.Add(new Token(TokenKind.End, "", lines.At(source.Length)));
        return tokens;
    }

    // Jinja reads "\r\n" and "\r" as "\n" and, without keep_trailing_newline, drops the template's last newline.
    static string Normalize(string source)
    {
        source = source.Replace("\r\n", "\n").Replace('\r', '\n');
        return source.EndsWith('\n') ? source[..^1] : source;
    }

    static int FindTagStart(string source, int from)
    {
        for (int i = source.IndexOf('{', from); i >= 0 && i + 1 < source.Length; i = source.IndexOf('{', i + 1))
            if (source[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    // Python's whitespace (its regex \s and str.strip()), which also counts the separators U+001C–U+001F.
    static bool IsSpace(char c) => JinjaStrings.IsSpace(c);
    const string Space = @"[\s\x1c-\x1f]";

    static string TrimEndSpace(string text)
    {
        int end = text.Length;
        while (end > 0 && IsSpace(text[end - 1])) end--;
        return text[..end];
    }

    static bool Matches(string source, int at, string what) => string.CompareOrdinal(source, at, what, 0, what.Length) == 0;

    // lstrip_blocks: drop the whitespace between the start of the line and a block tag, if that is all there is.
    static string LstripToLineStart(string text, bool lineStarting)
    {
        int lineStart = text.LastIndexOf('\n') + 1;
        if (lineStart == 0 && !lineStarting) return text;
        if (lineStart == text.Length) return text;
        for (int i = lineStart; i < text.Length; i++)
            if (!IsSpace(text[i])) return text;
        return text[..lineStart];
    }

    // After a tag: "-" eats all following whitespace, trim_blocks one newline. Returns where the next text starts
    // and whether that is the start of a line (which lstrip_blocks needs).
    static (int Pos, bool LineStarting) SkipAfterTag(string source, int pos, bool minus, bool trim)
    {
        if (minus)
        {
            int start = pos;
            while (pos < source.Length && IsSpace(source[pos])) pos++;
            return (pos, pos > start && source[pos - 1] == '\n');
        }
        if (trim && pos < source.Length && source[pos] == '\n') return (pos + 1, true);
        return (pos, false);
    }

    // {% raw %} … {% endraw %}: the content is text, not parsed. As in Jinja's lexer, trim_blocks does not apply
    // after "{% raw %}" (only "-%}" strips there), while "{% endraw %}" is handled like any block tag: "-" or
    // lstrip_blocks before it, "-", "+" or trim_blocks after it.
    // ("_" below stands for Space, Python's \s.)
    static readonly Regex RawBegin = new(@"\G\{%[-+]?_*raw_*(?:-%\}_*|%\})".Replace("_", Space), RegexOptions.CultureInvariant);
    static readonly Regex RawEnd = new(@"\{%([-+]?)_*endraw_*(?:\+%\}|-%\}_*|%\}\n?)".Replace("_", Space), RegexOptions.CultureInvariant);

    static int LexRawBlock(string source, List<Token> tokens, Match begin, LineCounter lines, ref bool lineStarting)
    {
        int pos = begin.Index + begin.Length;
        lineStarting = begin.Value.EndsWith('\n');
        var end = RawEnd.Match(source, pos);
        if (!end.Success) throw new JinjaException("the raw block is not closed (no '{% endraw %}')", lines.At(begin.Index));
        string text = source[pos..end.Index];
        char sign = end.Groups[1].Value is [var c] ? c : '\0';
        if (sign == '-') text = TrimEndSpace(text);
        else if (sign != '+' && LstripBlocks) text = LstripToLineStart(text, lineStarting);
        if (text.Length > 0) tokens.Add(new Token(TokenKind.Text, text, lines.At(pos)));
        lineStarting = end.Value.EndsWith('\n');
        return end.Index + end.Length;
    }

    static Token LexExpressionToken(string source, ref int p, LineCounter lines)
    {
        int start = p, line = lines.At(p);
        char c = source[p];
        if (char.IsLetter(c) || c == '_')
        {
            while (p < source.Length && (char.IsLetterOrDigit(source[p]) || source[p] == '_')) p++;
            return new Token(TokenKind.Name, source[start..p], line);
        }
        if (c == '0' && p + 1 < source.Length && char.ToLowerInvariant(source[p + 1]) is 'x' or 'o' or 'b')
            return new Token(TokenKind.Integer, LexRadixInteger(source, ref p, line), line);
        if (char.IsAsciiDigit(c))
        {
            bool isFloat = false;
            while (p < source.Length && (char.IsAsciiDigit(source[p]) || source[p] == '_')) p++;
            if (p + 1 < source.Length && source[p] == '.' && char.IsAsciiDigit(source[p + 1]))
            {
                isFloat = true;
                p++;
                while (p < source.Length && (char.IsAsciiDigit(source[p]) || source[p] == '_')) p++;
            }
            if (p < source.Length && source[p] is 'e' or 'E')
            {
                int q = p + 1;
                if (q < source.Length && source[q] is '+' or '-') q++;
                if (q < source.Length && char.IsAsciiDigit(source[q]))
                {
                    isFloat = true;
                    p = q;
                    while (p < source.Length && char.IsAsciiDigit(source[p])) p++;
                }
            }
            return new Token(isFloat ? TokenKind.Float : TokenKind.Integer, source[start..p].Replace("_", ""), line);
        }
        if (c is '\'' or '"') return new Token(TokenKind.String, LexString(source, ref p, lines), line);
        foreach (var op in Operators)
            if (Matches(source, p, op))
            {
                p += op.Length;
                return new Token(TokenKind.Operator, op, line);
            }
        throw new JinjaException($"unexpected character '{c}'", line);
    }

    // 0x1F, 0o17, 0b101 (underscores allowed between digits), as Jinja's integer literals; returns the decimal digits.
    static string LexRadixInteger(string source, ref int p, int line)
    {
        int start = p, radix = char.ToLowerInvariant(source[p + 1]) switch { 'x' => 16, 'o' => 8, _ => 2 };
        static int Digit(char c) => char.IsAsciiDigit(c) ? c - '0' : char.IsAsciiLetter(c) ? char.ToLowerInvariant(c) - 'a' + 10 : int.MaxValue;
        long value = 0;
        int digits = 0;
        for (p += 2; p < source.Length && (source[p] == '_' || Digit(source[p]) < radix); p++)
        {
            if (source[p] == '_') continue;
            try { value = checked(value * radix + Digit(source[p])); }
            catch (OverflowException) { throw new JinjaException($"the integer literal at '{source[start..(p + 1)]}' does not fit in 64 bits", line); }
            digits++;
        }
        if (digits == 0) throw new JinjaException($"'{source[start..p]}' is not a number", line);
        return value.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    // A Python string literal with its backslash escapes.
    static string LexString(string source, ref int p, LineCounter lines)
    {
        char quote = source[p];
        int line = lines.At(p);
        p++;
        var sb = new StringBuilder();
        while (true)
        {
            if (p >= source.Length) throw new JinjaException("the string is not closed", line);
            char c = source[p++];
            if (c == quote) return sb.ToString();
            if (c != '\\' || p >= source.Length) { sb.Append(c); continue; }
            char e = source[p++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case >= '0' and <= '7': // octal, up to three digits: '\0', '\101'
                {
                    int value = e - '0';
                    for (int i = 0; i < 2 && p < source.Length && source[p] is >= '0' and <= '7'; i++) value = value * 8 + (source[p++] - '0');
                    sb.Append((char)value);
                    break;
                }
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'v': sb.Append('\v'); break;
                case '\\': case '\'': case '"': sb.Append(e); break;
                case '\n': break; // a backslash before a newline continues the line
                case 'x': sb.Append(HexChar(source, ref p, 2, line)); break;
                case 'u': sb.Append(HexChar(source, ref p, 4, line)); break;
                case 'U': sb.Append(char.ConvertFromUtf32(int.Parse(HexDigits(source, ref p, 8, line), System.Globalization.NumberStyles.HexNumber))); break;
                default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes as they are (\N{name} is not supported)
            }
        }
    }

    static char HexChar(string source, ref int p, int digits, int line) =>
        (char)int.Parse(HexDigits(source, ref p, digits, line), System.Globalization.NumberStyles.HexNumber);

    static string HexDigits(string source, ref int p, int digits, int line)
    {
        if (p + digits > source.Length || !source.Substring(p, digits).All(char.IsAsciiHexDigit))
            throw new JinjaException($"a \\x, \\u or \\U escape needs {digits} hex digits", line);
        p += digits;
        return source.Substring(p - digits, digits);
    }

    sealed class LineCounter(string source)
    {
        readonly List<int> _newlines = Enumerable.Range(0, source.Length).Where(i => source[i] == '\n').ToList();

        public int At(int pos)
        {
            int index = _newlines.BinarySearch(pos);
            return (index < 0 ? ~index : index) + 1;
        }
    }
}
