using System.Text.Json;

namespace PeftSharp.Tests;

/// <summary>A fresh folder under the system temp folder, deleted with its contents on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("peftsharp-tests-").FullName;

    /// <summary>The path of a file or subfolder inside.</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Write(string name, string text) => System.IO.File.WriteAllText(File(name), text);

    public void WriteJson(string name, object value) => Write(name, JsonSerializer.Serialize(value));

    /// <summary>Writes adapter_config.json into a new subfolder and returns the subfolder.</summary>
    public string WithConfig(string json, string name = "adapter")
    {
        string dir = File(name);
        Directory.CreateDirectory(dir);
        System.IO.File.WriteAllText(System.IO.Path.Combine(dir, "adapter_config.json"), json);
        return dir;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
