using System.Text.Json;

namespace PeftSharp.Cli;

/// <summary>The <c>--json</c> convention: the last line on stdout is exactly one JSON object.</summary>
public static class JsonOutput
{
    // Relaxed escaping: tokens such as "<|im_start|>" or "Ġworld" stay readable (the output is UTF-8 and still valid JSON).
    static readonly JsonSerializerOptions Options = new() { WriteIndented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static void Write(object result)
    {
        Console.Out.WriteLine(JsonSerializer.Serialize(result, Options));
        Console.Out.Flush();
    }
}
