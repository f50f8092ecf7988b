using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace PeftSharp.Training;

/// <summary>
/// One line of metrics.jsonl: a training log line (loss, learning_rate, grad_norm, tokens_per_second) or an
/// evaluation line (eval_loss). Absent values are left out of the JSON.
/// </summary>
public sealed record MetricsEntry
{
    /// <summary><c>step</c>: the optimizer step.</summary>
    [JsonPropertyName("step")] public long Step { get; init; }
    /// <summary><c>epoch</c>: epochs completed, fractional.</summary>
    [JsonPropertyName("epoch")] public double? Epoch { get; init; }
    /// <summary>Mean of the step losses since the previous training line.</summary>
    [JsonPropertyName("loss")] public double? Loss { get; init; }
    /// <summary><c>learning_rate</c> at this step.</summary>
    [JsonPropertyName("learning_rate")] public double? LearningRate { get; init; }
    /// <summary><c>grad_norm</c>: the global L2 gradient norm before clipping.</summary>
    [JsonPropertyName("grad_norm")] public double? GradNorm { get; init; }
    /// <summary><c>tokens_per_second</c> since the previous line.</summary>
    [JsonPropertyName("tokens_per_second")] public double? TokensPerSecond { get; init; }
    /// <summary><c>eval_loss</c>: mean validation loss (evaluation lines).</summary>
    [JsonPropertyName("eval_loss")] public double? EvalLoss { get; init; }
    /// <summary><c>elapsed_seconds</c> since training started.</summary>
    [JsonPropertyName("elapsed_seconds")] public double? ElapsedSeconds { get; init; }
}

/// <summary>
/// metrics.jsonl: one JSON object per logged step or evaluation, appended and flushed line by line so that a
/// crashed run keeps what it logged and a plot can be drawn while training runs.
/// </summary>
public sealed class MetricsLog
{
    /// <summary>The log's file name in the output folder.</summary>
    public const string FileName = "metrics.jsonl";

    static readonly JsonSerializerOptions Json = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        // NaN losses (a step with nothing to learn) are written as "NaN" rather than failing the run.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>A log appending to <paramref name="path"/>.</summary>
    public MetricsLog(string path) => Path = path;

    /// <summary>The metrics.jsonl file.</summary>
    public string Path { get; }

    /// <summary>Appends one line and flushes it.</summary>
    public void Append(MetricsEntry entry)
    {
        using var stream = new FileStream(Path, FileMode.Append, FileAccess.Write, FileShare.Read);
        using var writer = new StreamWriter(stream);
        writer.Write(JsonSerializer.Serialize(entry, Json));
        writer.Write('\n');
    }

    /// <summary>Drops the lines logged after <paramref name="step"/>: a resumed run logs those steps again.</summary>
    public void TruncateAfter(long step)
    {
        if (!File.Exists(Path)) return;
        var kept = File.ReadAllLines(Path).Where(line => !string.IsNullOrWhiteSpace(line) && Parse(line, Path, 0).Step <= step).ToList();
        Tensors.AtomicFile.Write(Path, stream =>
        {
            using var writer = new StreamWriter(stream, leaveOpen: true);
            foreach (var line in kept) writer.Write(line + "\n");
        });
    }

    /// <summary>Every entry of a metrics.jsonl file, in order.</summary>
    /// <exception cref="PeftSharpException">The file is missing or a line is not a metrics entry.</exception>
    public static IReadOnlyList<MetricsEntry> Read(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: file not found");
        var entries = new List<MetricsEntry>();
        int number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (!string.IsNullOrWhiteSpace(line)) entries.Add(Parse(line, path, number));
        }
        return entries;
    }

    static MetricsEntry Parse(string line, string path, int number)
    {
        try
        {
            return JsonSerializer.Deserialize<MetricsEntry>(line, Json) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            string where = number > 0 ? $"{path}:{number.ToString(CultureInfo.InvariantCulture)}" : path;
            throw new PeftSharpException($"{where}: expected a metrics JSON object per line ({e.Message.Split('\n')[0]})");
        }
    }
}
