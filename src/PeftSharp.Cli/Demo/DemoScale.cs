namespace PeftSharp.Cli.Demo;

/// <summary>How big the demo runs: "full" (the default, minutes on 2 cores) or "tiny" (seconds; for tests).</summary>
public sealed record DemoScale(
    string Name,
    int Merges,
    int Hidden,
    int Layers,
    int Heads,
    int KvHeads,
    int Intermediate,
    int Context,
    int BaseSteps,
    TimeSpan BaseBudget,
    int BaseBatch,
    double BaseLearningRate,
    int AdapterSteps,
    TimeSpan AdapterBudget,
    int AdapterBatch,
    int Rank,
    int EvalChars,
    int SampleTokens)
{
    public static DemoScale Full { get; } = new("full", Merges: 768, Hidden: 256, Layers: 6, Heads: 8, KvHeads: 4, Intermediate: 704, Context: 256,
        BaseSteps: 400, BaseBudget: TimeSpan.FromSeconds(270), BaseBatch: 16, BaseLearningRate: 2e-3,
        AdapterSteps: 100, AdapterBudget: TimeSpan.FromSeconds(60), AdapterBatch: 8, Rank: 8, EvalChars: 12000, SampleTokens: 60);

    public static DemoScale Tiny { get; } = new("tiny", Merges: 32, Hidden: 32, Layers: 1, Heads: 2, KvHeads: 1, Intermediate: 64, Context: 64,
        BaseSteps: 6, BaseBudget: TimeSpan.FromSeconds(30), BaseBatch: 4, BaseLearningRate: 3e-3,
        AdapterSteps: 4, AdapterBudget: TimeSpan.FromSeconds(10), AdapterBatch: 4, Rank: 4, EvalChars: 1500, SampleTokens: 12);

    public static DemoScale Parse(string name) => name switch
    {
        "full" => Full,
        "tiny" => Tiny,
        _ => throw new PeftSharpException($"--scale: expected full or tiny, got \"{name}\""),
    };

    /// <summary>config.json of the demo's base model: a small Llama (RMSNorm, RoPE, grouped-query attention, SwiGLU).</summary>
    public string ConfigJson(int vocabSize, int eos) => $$"""
        {
          "architectures": ["LlamaForCausalLM"],
          "bos_token_id": {{eos}},
          "eos_token_id": {{eos}},
          "hidden_act": "silu",
          "hidden_size": {{Hidden}},
          "intermediate_size": {{Intermediate}},
          "max_position_embeddings": {{Context}},
          "model_type": "llama",
          "num_attention_heads": {{Heads}},
          "num_hidden_layers": {{Layers}},
          "num_key_value_heads": {{KvHeads}},
          "rms_norm_eps": 1e-05,
          "rope_theta": 10000.0,
          "tie_word_embeddings": true,
          "torch_dtype": "bfloat16",
          "vocab_size": {{vocabSize}}
        }
        """;
}
