using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Prompts;

/// <summary>
/// Extension point 4 for prompt tuning and P-tuning: the active adapter's N virtual-token embeddings go in front of
/// the token embeddings of every sequence (PEFT's <c>cat((prompts, inputs_embeds), dim=1)</c>, cast to the model's dtype).
/// </summary>
internal sealed class VirtualTokenPrompt(PromptModule module, int tokens) : IInputEmbeddingRewrite
{
    public int PrependedTokens => tokens;

    public Tensor Rewrite(Tensor embeddings, Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var prompt = module.Output().to(embeddings.dtype, embeddings.device);
        var batch = prompt.unsqueeze(0).expand(embeddings.shape[0], -1, -1);
        return cat([batch, embeddings], 1).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Extension point 3 for prefix tuning: the active adapter's [N, num_layers·2·token_dim] output read as PEFT's
/// <c>get_prompt</c> does (view [N, num_layers·2, heads, head_dim]; layer l's keys at 2l, values at 2l+1), one
/// [1, heads, N, head_dim] key and value tensor per layer. With prefix_projection the MLP runs for each layer's slice request.
/// </summary>
internal sealed class PrefixKeyValues(PromptModule module, PrefixTuningConfig config) : IKvPrefix
{
    public int Length => config.NumVirtualTokens!.Value;

    public (Tensor Keys, Tensor Values) For(int layer, long batch, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        int n = Length, heads = config.NumAttentionHeads!.Value, hd = config.TokenDim!.Value / heads;
        var view = module.Output().view(n, config.NumLayers!.Value * 2, heads, hd);
        var keys = view.select(1, 2 * layer).permute(1, 0, 2).unsqueeze(0).to(dtype, device);
        var values = view.select(1, 2 * layer + 1).permute(1, 0, 2).unsqueeze(0).to(dtype, device);
        return (keys.MoveToOuterDisposeScope(), values.MoveToOuterDisposeScope());
    }
}
