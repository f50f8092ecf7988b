using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace PeftSharp.Cli.Federated;

/// <summary>
/// The federated server's HTTP API (all under <see cref="Root"/>; JSON answers; errors as <c>{"error": "one line"}</c>):
/// <list type="bullet">
/// <item><c>POST checkin?client=NAME</c> → <see cref="CheckInJson"/>: "train" (selected: fetch, train, upload), "wait", or "done".</item>
/// <item><c>GET rounds/N/adapter_config.json</c>, <c>GET rounds/N/adapter_model.safetensors</c>: the global adapter round N starts from (PEFT's files).</item>
/// <item><c>POST rounds/N/update?client=NAME&amp;samples=COUNT</c> with the trained <c>adapter_model.safetensors</c> as the body.</item>
/// <item><c>GET status</c>: rounds done, the open round, who was selected and who reported.</item>
/// </list>
/// With a token, every request carries <c>Authorization: Bearer TOKEN</c>.
/// </summary>
public static partial class FederatedProtocol
{
    public const string Root = "/federated/v1";
    public const string TokenVariable = "PEFTSHARP_FEDERATED_TOKEN";

    /// <summary>Client names become file names on the server: letters, digits, '.', '_' and '-', at most 64.</summary>
    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    public static partial Regex ClientName();

    public static string CheckClientName(string? name, string flag = "--name") =>
        name is not null && ClientName().IsMatch(name) ? name
            : throw new PeftSharpException($"{flag}: expected 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit), got \"{name}\"");
}

/// <summary>The check-in answer on the wire.</summary>
public sealed record CheckInJson(
    [property: JsonPropertyName("status")] string Status,
    [property: JsonPropertyName("round")] int Round,
    [property: JsonPropertyName("local_steps")] int LocalSteps,
    [property: JsonPropertyName("learning_rate")] double LearningRate,
    [property: JsonPropertyName("batch_size")] int BatchSize,
    [property: JsonPropertyName("seed")] ulong Seed,
    [property: JsonPropertyName("freeze_lora_a")] bool FreezeLoraA,
    [property: JsonPropertyName("seconds_left")] double SecondsLeft,
    [property: JsonPropertyName("retry_after_seconds")] double RetryAfterSeconds);
