namespace PeftSharp;

/// <summary>
/// An error caused by the user's input (a file, a tensor, a flag), not by a bug.
/// The message is one line that names the file, tensor or flag and what was expected;
/// the CLI prints it without a stack trace and exits non-zero.
/// </summary>
public class PeftSharpException : Exception
{
    /// <summary>An error whose message is shown to the user as it is.</summary>
    public PeftSharpException(string message) : base(message) { }
    /// <summary>An error whose message is shown to the user, caused by <paramref name="inner"/>.</summary>
    public PeftSharpException(string message, Exception inner) : base(message, inner) { }
}
