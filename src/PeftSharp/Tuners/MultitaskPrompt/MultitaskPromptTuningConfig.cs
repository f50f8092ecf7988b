using System.Text.Json.Serialization;
using PeftSharp.Tuners.Prompts;

namespace PeftSharp.Tuners.MultitaskPrompt;

/// <summary>The values of PEFT's <c>MultitaskPromptTuningInit</c>.</summary>
public static class MultitaskPromptTuningInit
{
    /// <summary>The shared prompt from the embeddings of <c>prompt_tuning_init_text</c> (as prompt tuning's TEXT).</summary>
    public const string Text = PromptTuningInit.Text;
    /// <summary>The shared prompt N(0, 1) (the default); the task matrices always start N(0, 0.02²).</summary>
    public const string Random = PromptTuningInit.Random;
    /// <summary>The source's shared prompt and the mean over its tasks of prefix_task_cols and prefix_task_rows (num_tasks 1).</summary>
    public const string AverageSourceTasks = "AVERAGE_SOURCE_TASKS";
    /// <summary>The source's shared prompt and the task matrices of its task <c>prompt_tuning_init_task</c> (num_tasks 1).</summary>
    public const string ExactSourceTask = "EXACT_SOURCE_TASK";
    /// <summary>The source's shared prompt only; the task matrices start N(0, 0.02²).</summary>
    public const string OnlySourceShared = "ONLY_SOURCE_SHARED";

    /// <summary>Every value, in PEFT's order.</summary>
    public static IReadOnlyList<string> All { get; } = [Text, Random, AverageSourceTasks, ExactSourceTask, OnlySourceShared];

    /// <summary>The values that read <c>prompt_tuning_init_state_dict_path</c>.</summary>
    public static IReadOnlyList<string> FromSource { get; } = [AverageSourceTasks, ExactSourceTask, OnlySourceShared];
}

/// <summary>
/// PEFT's <c>MultitaskPromptTuningConfig</c> (<c>peft_type: "MULTITASK_PROMPT_TUNING"</c>, Wang et al. 2023, MPT): a
/// prompt-tuning config (it derives from it, as in PEFT) plus the task count, the rank of each task's matrix and the
/// source-prompt initialisation.
/// </summary>
public sealed class MultitaskPromptTuningConfig : PromptTuningConfig
{
    /// <summary>The peft_type value.</summary>
    public const string Type = "MULTITASK_PROMPT_TUNING";

    /// <summary>A multitask prompt-tuning config with PEFT's defaults.</summary>
    public MultitaskPromptTuningConfig() : base(Type) { }

    /// <inheritdoc/>
    [JsonIgnore]
    public override string ExpectedPeftType => Type;

    /// <inheritdoc/>
    [JsonIgnore]
    protected override IReadOnlyList<string> InitModes => MultitaskPromptTuningInit.All;

    /// <summary>The source folder's or file's state dict for the source-task inits: an <c>adapter_model.safetensors</c> of an MPT adapter (PeftSharp reads safetensors only).</summary>
    [JsonPropertyName("prompt_tuning_init_state_dict_path")]
    public string? PromptTuningInitStateDictPath { get; set; }

    /// <summary>The source task whose matrices EXACT_SOURCE_TASK copies (default 0).</summary>
    [JsonPropertyName("prompt_tuning_init_task")]
    public int? PromptTuningInitTask { get; set; } = 0;

    /// <summary>Rank r of each task's matrix prefix_task_cols[t] · prefix_task_rows[t] (default 1).</summary>
    [JsonPropertyName("num_ranks")]
    public int? NumRanks { get; set; } = 1;

    /// <summary>Number of tasks: rows of prefix_task_cols and prefix_task_rows; task ids are 0 … num_tasks − 1 (default 1).</summary>
    [JsonPropertyName("num_tasks")]
    public int? NumTasks { get; set; } = 1;

    /// <summary>Reads a multitask prompt-tuning adapter folder's <c>adapter_config.json</c>.</summary>
    public static new MultitaskPromptTuningConfig Load(string adapterDir) => LoadFromDirectory<MultitaskPromptTuningConfig>(adapterDir, false);

    /// <summary>Parses an <c>adapter_config.json</c> text; <paramref name="sourceName"/> names it in errors.</summary>
    public static new MultitaskPromptTuningConfig FromJson(string json, string sourceName = ConfigFileName) =>
        ParseJson<MultitaskPromptTuningConfig>(json, sourceName, false);

    /// <summary>Task count and rank positive; a state-dict path for the source inits.</summary>
    protected override void PostInit(List<string> warnings)
    {
        base.PostInit(warnings);
        if (NumTasks is null or < 1) throw Invalid("num_tasks", $"is {Show(NumTasks)}; expected a positive number of tasks");
        if (NumRanks is null or < 1) throw Invalid("num_ranks", $"is {Show(NumRanks)}; expected a positive rank");
        if (MultitaskPromptTuningInit.FromSource.Contains(PromptTuningInitMode) && string.IsNullOrEmpty(PromptTuningInitStateDictPath))
            throw Invalid("prompt_tuning_init_state_dict_path", $"is missing; prompt_tuning_init {PromptTuningInitMode} reads the source adapter's prompt from it");
        if (PromptTuningInitMode == MultitaskPromptTuningInit.ExactSourceTask && PromptTuningInitTask is null or < 0)
            throw Invalid("prompt_tuning_init_task", $"is {Show(PromptTuningInitTask)}; expected a source task id ≥ 0");
    }

    static string Show(int? v) => v?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "null";
}
