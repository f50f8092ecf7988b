using System.Text.Json.Serialization;
using PeftSharp.Peft;

namespace PeftSharp.Tuners.IA3;

/// <summary>
/// PEFT's <c>IA3Config</c> (<c>peft_type: "IA3"</c>): every field with PEFT's JSON name and default. (IA)³ learns one
/// vector per target layer that scales the layer's output, or, for the feed-forward modules, its input.
/// </summary>
public sealed class IA3Config : PeftConfig
{
    /// <summary>An (IA)³ config with PEFT's defaults (peft_type IA3).</summary>
    public IA3Config() : base(PeftTypes.IA3) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => PeftTypes.IA3;

    /// <summary>Modules to adapt: names (exact or dot-suffix), a regex (full match) or "all-linear"; null: the model type's default (<see cref="IA3Defaults"/>).</summary>
    [JsonPropertyName("target_modules")]
    public TargetModules? TargetModules { get; set; }

    /// <summary>Modules never to adapt, matched like target_modules.</summary>
    [JsonPropertyName("exclude_modules")]
    public TargetModules? ExcludeModules { get; set; }

    /// <summary>
    /// The targets treated as feed-forward layers, which scale their input instead of their output: a list (a module
    /// path ending with an entry, PEFT's plain <c>endswith</c>) or a regex (full match). Must be a subset of
    /// target_modules when both are lists; null: the model type's default.
    /// </summary>
    [JsonPropertyName("feedforward_modules")]
    public TargetModules? FeedforwardModules { get; set; }

    /// <summary>True when the target layers store their weight as (fan_in, fan_out), like GPT-2's Conv1D (set from the layers found).</summary>
    [JsonPropertyName("fan_in_fan_out")]
    public bool FanInFanOut { get; set; }

    /// <summary>Modules besides the (IA)³ layers that are trained in full and saved.</summary>
    [JsonPropertyName("modules_to_save")]
    public IReadOnlyList<string>? ModulesToSave { get; set; }

    /// <summary>Initialise the vectors to ones (the identity); false draws them from N(0, 1), for tests. Default true.</summary>
    [JsonPropertyName("init_ia3_weights")]
    public bool InitIa3Weights { get; set; } = true;

    /// <summary>Reads <c>adapterDir/adapter_config.json</c> (peft_type must be "IA3").</summary>
    public static IA3Config Load(string adapterDir) => LoadFromDirectory<IA3Config>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static IA3Config FromJson(string json, string sourceName = ConfigFileName) => ParseJson<IA3Config>(json, sourceName, false);

    /// <summary>PEFT's <c>IA3Config.__post_init__</c>: feedforward_modules must be a subset of target_modules (when both are lists).</summary>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (FeedforwardModules?.Names is { } ff && TargetModules?.Names is { } targets)
        {
            var missing = ff.Where(f => !targets.Contains(f, StringComparer.Ordinal)).ToList();
            if (missing.Count > 0)
                throw Invalid("feedforward_modules", $"names \"{missing[0]}\", which is not in 'target_modules' ({string.Join(", ", targets)}); feedforward_modules must be a subset of target_modules");
        }
    }
}
