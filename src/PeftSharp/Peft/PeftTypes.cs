namespace PeftSharp.Peft;

/// <summary>The values of PEFT's <c>PeftType</c> enum (the <c>peft_type</c> field).</summary>
public static class PeftTypes
{
    public const string Lora = "LORA";
    public const string AdaLora = "ADALORA";
    public const string IA3 = "IA3";

    /// <summary>Every PeftType value of the matched PEFT version, in PEFT's declaration order.</summary>
    public static IReadOnlyList<string> All { get; } =
    [
        "PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "LORA", "ADALORA", "ADAMSS", "BOFT",
        "ADAPTION_PROMPT", "IA3", "BEFT", "LILY", "LOHA", "LOKR", "OFT", "POLY", "LN_TUNING", "VERA", "FROD", "PVERA",
        "FOURIERFT", "GLORA", "XLORA", "HRA", "VBLORA", "UNILORA", "CPT", "MISS", "RANDLORA", "ROAD",
        "TRAINABLE_TOKENS", "HIRA", "SHIRA", "C3A", "WAVEFT", "OSF", "DELORA", "GRALORA", "CARTRIDGE", "TINYLORA",
        "PSOFT", "PEANUT", "SUPERTUNING", "DEFT",
    ];
}

/// <summary>The values of PEFT's <c>TaskType</c> enum (the <c>task_type</c> field).</summary>
public static class TaskTypes
{
    public const string SeqCls = "SEQ_CLS";
    public const string Seq2SeqLm = "SEQ_2_SEQ_LM";
    public const string CausalLm = "CAUSAL_LM";
    public const string TokenCls = "TOKEN_CLS";
    public const string QuestionAns = "QUESTION_ANS";
    public const string FeatureExtraction = "FEATURE_EXTRACTION";

    public static IReadOnlyList<string> All { get; } =
        [SeqCls, Seq2SeqLm, CausalLm, TokenCls, QuestionAns, FeatureExtraction];
}
