using System.CommandLine;
using System.Text.Json;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// Values for <c>train</c>: a flag given on the command line wins, then the same key in <c>--config FILE.json</c>
/// (the flag's name without dashes, e.g. <c>"lr"</c>, <c>"batch_size"</c> or <c>"batch-size"</c>), then the default.
/// </summary>
public sealed class TrainSettings
{
    readonly ParseResult parse;
    readonly Dictionary<string, JsonElement> file = new(StringComparer.OrdinalIgnoreCase);
    readonly string? configPath;

    public TrainSettings(ParseResult parse, string? configPath)
    {
        this.parse = parse;
        this.configPath = configPath;
        if (configPath is null) return;
        if (!File.Exists(configPath)) throw new PeftSharpException($"--config {configPath}: file not found");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(configPath));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new PeftSharpException($"--config {configPath}: expected a JSON object");
            foreach (var p in doc.RootElement.EnumerateObject()) file[p.Name.Replace('-', '_')] = p.Value.Clone();
        }
        catch (JsonException e)
        {
            throw PeftSharp.IO.JsonErrors.Invalid($"--config {configPath}", e);
        }
    }

    public T Get<T>(Option<T> option)
    {
        var result = parse.GetResult(option);
        string key = option.Name.TrimStart('-').Replace('-', '_');
        if ((result is null || result.Implicit) && file.TryGetValue(key, out var value))
        {
            T read;
            try
            {
                read = value.Deserialize<T>() ?? throw new JsonException("null");
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
            {
                throw new PeftSharpException($"--config {configPath}: \"{key}\" must be {typeof(T).Name} ({value.GetRawText()} given)");
            }
            if (FlagRanges.Violation(option, read) is string problem)
                throw new PeftSharpException($"--config {configPath}: \"{key}\" ({problem})");
            return read;
        }
        return parse.GetValue(option)!;
    }

    /// <summary>
    /// Reads every option once, so that a value of the wrong type or out of its range (<see cref="FlagRanges"/>), from the
    /// command line or the file, is reported before any work starts.
    /// </summary>
    public void ValidateAll(IEnumerable<Option> options)
    {
        foreach (var option in options)
        {
            string key = option.Name.TrimStart('-').Replace('-', '_');
            var result = parse.GetResult(option);
            if ((result is null || result.Implicit) && file.TryGetValue(key, out var value))
            {
                object? read;
                try { read = value.Deserialize(option.ValueType); }
                catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or NotSupportedException)
                {
                    throw new PeftSharpException($"--config {configPath}: \"{key}\" must be {option.ValueType.Name} ({value.GetRawText()} given)");
                }
                if (FlagRanges.Violation(option, read) is string problem)
                    throw new PeftSharpException($"--config {configPath}: \"{key}\" ({problem})");
            }
        }
    }

    /// <summary>Keys in the file that name no option: reported so typos do not go unnoticed.</summary>
    public IEnumerable<string> UnknownKeys(IEnumerable<Option> options)
    {
        var known = options.Select(o => o.Name.TrimStart('-').Replace('-', '_')).ToHashSet(StringComparer.OrdinalIgnoreCase);
        return file.Keys.Where(k => !known.Contains(k));
    }
}
