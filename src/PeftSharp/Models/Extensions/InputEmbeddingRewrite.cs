using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Extension point 4: a rewrite of the token embeddings before the first block (prompt tuning, P-tuning). The rewrite
/// may prepend <see cref="PrependedTokens"/> virtual tokens; they take the first positions (as PEFT passes
/// <c>inputs_embeds</c> with the virtual tokens in front), every real token sees them, and the model drops their
/// positions from its output so callers get hidden states and logits for their own tokens only. With a
/// <see cref="KvCache"/> the rewrite applies on the first forward only (later steps find the virtual tokens cached).
/// </summary>
public interface IInputEmbeddingRewrite
{
    /// <summary>Virtual tokens the rewrite puts in front of the sequence (0 for a rewrite in place).</summary>
    int PrependedTokens { get; }

    /// <summary>Token embeddings [B, T, H] (before GPT-2's position embedding is added) → [B, PrependedTokens + T, H].</summary>
    Tensor Rewrite(Tensor embeddings, Tensor inputIds);
}
