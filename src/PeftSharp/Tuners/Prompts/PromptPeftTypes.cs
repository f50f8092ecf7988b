namespace PeftSharp.Tuners.Prompts;

/// <summary>The <c>peft_type</c> values of the soft-prompt methods (PEFT's PeftType enum).</summary>
public static class PromptPeftTypes
{
    /// <summary>Prompt tuning (Lester et al. 2021).</summary>
    public const string PromptTuning = "PROMPT_TUNING";
    /// <summary>P-tuning (Liu et al. 2021).</summary>
    public const string PTuning = "P_TUNING";
    /// <summary>Prefix tuning (Li and Liang 2021).</summary>
    public const string PrefixTuning = "PREFIX_TUNING";
}
