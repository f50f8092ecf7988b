namespace PeftSharp.Tuners.Prompts;

/// <summary>The <c>peft_type</c> values of the soft-prompt methods (PEFT's PeftType enum).</summary>
public static class PromptPeftTypes
{
    public const string PromptTuning = "PROMPT_TUNING";
    public const string PTuning = "P_TUNING";
    public const string PrefixTuning = "PREFIX_TUNING";
}
