using System.Text.Json;

namespace PeftSharp.Cli;

/// <summary>
/// Runs a command body and turns user mistakes (bad files, flags, tensors) into one line on stderr and exit
/// code 1, with no stack trace. Anything else is a bug in PeftSharp and is reported in full.
/// </summary>
public static class CliErrors
{
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (UserMessage(e) is string message)
        {
            Console.Out.Flush();
            Console.Error.WriteLine($"error: {message}");
            return 1;
        }
    }

    static string? UserMessage(Exception e) => e switch
    {
        PeftSharpException p => p.Message,
        FileNotFoundException f => $"{f.FileName ?? "file"}: not found",
        DirectoryNotFoundException d => d.Message,
        UnauthorizedAccessException u => u.Message,
        JsonException j => $"invalid JSON: {j.Message.Split('\n')[0]}",
        IOException io => io.Message,
        _ => null,
    };
}
