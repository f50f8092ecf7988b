using System.Text.Json;

namespace PeftSharp.Cli;

/// <summary>The <c>--json</c> convention: the last line on stdout is exactly one JSON object.</summary>
public static class JsonOutput
{
    static readonly JsonSerializerOptions Options = new() { WriteIndented = false };

    public static void Write(object result)
    {
        Console.Out.WriteLine(JsonSerializer.Serialize(result, Options));
        Console.Out.Flush();
    }
}
