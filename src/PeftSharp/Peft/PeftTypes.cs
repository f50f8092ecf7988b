namespace PeftSharp.Peft;

/// <summary>The values of PEFT's <c>PeftType</c> enum (the <c>peft_type</c> field).</summary>
public static class PeftTypes
{
    /// <summary>LoRA and its variants (DoRA, rsLoRA, PiSSA...): <c>LORA</c>.</summary>
    public const string Lora = "LORA";
    /// <summary>AdaLoRA: <c>ADALORA</c>.</summary>
    public const string AdaLora = "ADALORA";
    /// <summary>(IA)³: <c>IA3</c>.</summary>
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
    /// <summary>Sequence classification.</summary>
    public const string SeqCls = "SEQ_CLS";
    /// <summary>Sequence-to-sequence language modelling.</summary>
    public const string Seq2SeqLm = "SEQ_2_SEQ_LM";
    /// <summary>Causal language modelling, the task PeftSharp trains.</summary>
    public const string CausalLm = "CAUSAL_LM";
    /// <summary>Token classification.</summary>
    public const string TokenCls = "TOKEN_CLS";
    /// <summary>Extractive question answering.</summary>
    public const string QuestionAns = "QUESTION_ANS";
    /// <summary>Feature extraction (embeddings).</summary>
    public const string FeatureExtraction = "FEATURE_EXTRACTION";

    /// <summary>Every TaskType value, in PEFT's declaration order.</summary>
    public static IReadOnlyList<string> All { get; } =
        [SeqCls, Seq2SeqLm, CausalLm, TokenCls, QuestionAns, FeatureExtraction];
}
