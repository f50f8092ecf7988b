using System.Globalization;
using System.Text;
using PeftSharp.Jinja;

namespace PeftSharp.Tokenization;

/// <summary>
/// A model's chat template (Jinja, from tokenizer_config.json or chat_template.jinja) rendered as transformers'
/// <c>apply_chat_template</c> renders it: variables <c>messages</c>, <c>add_generation_prompt</c>,
/// <c>tools</c> and <c>documents</c> (None), the tokenizer's special tokens that are set (<c>bos_token</c>,
/// <c>eos_token</c>, <c>unk_token</c>, <c>pad_token</c>), and the functions <c>raise_exception</c> and
/// <c>strftime_now</c>.
/// </summary>
public sealed class ChatTemplate
{
    readonly JinjaTemplate _template;
    readonly IReadOnlyDictionary<string, string> _specialTokens;
    readonly Func<DateTime> _now;

    ChatTemplate(JinjaTemplate template, IReadOnlyDictionary<string, string> specialTokens, Func<DateTime> now)
    {
        _template = template;
        _specialTokens = specialTokens;
        _now = now;
    }

    /// <summary>The template's source text.</summary>
    public string Source { get; private init; } = "";

    /// <summary>Whether the template marks the assistant's text with {% generation %} blocks (then those decide the loss).</summary>
    public bool HasGenerationBlocks => _template.HasGenerationBlocks;

    /// <summary>Parses <paramref name="source"/>; <paramref name="specialTokens"/> maps "bos_token" etc. to their text.</summary>
    /// <param name="now">The clock for <c>strftime_now</c> (local time, as transformers); tests pass a fixed one.</param>
    /// <exception cref="JinjaException">The template has a syntax error (the message gives its line).</exception>
    public static ChatTemplate Parse(string source, IReadOnlyDictionary<string, string> specialTokens, Func<DateTime>? now = null) =>
        new(JinjaTemplate.Parse(source), specialTokens, now ?? (() => DateTime.Now)) { Source = source };

    /// <summary>The tokenizer's chat template, or null when it has none.</summary>
    /// <exception cref="PeftSharpException">The template does not parse (naming the line).</exception>
    public static ChatTemplate? FromTokenizer(ModelTokenizer tokenizer)
    {
        if (tokenizer.ChatTemplate is null) return null;
        try
        {
            return Parse(tokenizer.ChatTemplate, tokenizer.SpecialTokens);
        }
        catch (JinjaException e)
        {
            throw new PeftSharpException($"the tokenizer's chat template cannot be read: {e.Message}");
        }
    }

    /// <summary>Renders <paramref name="messages"/> (a list of dicts, see <see cref="JinjaValues"/>).</summary>
    /// <exception cref="JinjaException">The template failed or rejected the messages (<see cref="JinjaRaisedException"/>).</exception>
    public string Render(IReadOnlyList<object?> messages, bool addGenerationPrompt) => RenderWithGenerationSpans(messages, addGenerationPrompt).Text;

    /// <summary>Renders and returns the character spans written inside {% generation %} blocks.</summary>
    public (string Text, IReadOnlyList<(int Start, int End)> GenerationSpans) RenderWithGenerationSpans(IReadOnlyList<object?> messages, bool addGenerationPrompt)
    {
        var variables = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = messages.ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = null,
            ["documents"] = null,
            ["strftime_now"] = new JinjaFunction("strftime_now", (args, _) => Strftime(_now(), args.Count > 0 ? JinjaValues.ToStr(args[0]) : "")),
        };
        foreach (var (name, text) in _specialTokens) variables[name] = text;
        return _template.RenderWithGenerationSpans(variables);
    }

    /// <summary>Python's <c>datetime.strftime</c> for the directives templates use (English names, as the C locale).</summary>
    public static string Strftime(DateTime time, string format)
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length) { sb.Append(format[i]); continue; }
            char d = format[++i];
            sb.Append(d switch
            {
                'd' => time.ToString("dd", c),
                'm' => time.ToString("MM", c),
                'Y' => time.Year.ToString("0000", c),
                'y' => time.ToString("yy", c),
                'B' => time.ToString("MMMM", c),
                'b' or 'h' => time.ToString("MMM", c),
                'A' => time.ToString("dddd", c),
                'a' => time.ToString("ddd", c),
                'H' => time.ToString("HH", c),
                'I' => time.ToString("hh", c),
                'M' => time.ToString("mm", c),
                'S' => time.ToString("ss", c),
                'p' => time.Hour < 12 ? "AM" : "PM",
                'j' => time.DayOfYear.ToString("000", c),
                'e' => time.Day.ToString(c).PadLeft(2),
                'f' => (time.Ticks % TimeSpan.TicksPerSecond / 10).ToString("000000", c),
                'F' => time.ToString("yyyy-MM-dd", c),
                'T' => time.ToString("HH:mm:ss", c),
                '%' => "%",
                _ => "%" + d,
            });
        }
        return sb.ToString();
    }
}
