namespace PeftSharp.Jinja;

/// <summary>A template that cannot be parsed or rendered, with the template line it happened on.</summary>
public class JinjaException : Exception
{
    /// <summary>The 1-based template line the error is on; 0 when it is not tied to a line.</summary>
    public int Line { get; }

    /// <summary>An error at <paramref name="line"/> (0: none); the message starts with "line N: " when there is one.</summary>
    public JinjaException(string message, int line) : base(line > 0 ? $"line {line}: {message}" : message) => Line = line;
}

/// <summary>The template called <c>raise_exception(message)</c>: it rejects its input (say, roles that do not alternate).</summary>
public sealed class JinjaRaisedException(string message, int line) : JinjaException(message, line)
{
    /// <summary>The template's own message, without the line.</summary>
    public string TemplateMessage { get; } = message;
}
