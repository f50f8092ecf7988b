using PeftSharp.Models;
using PeftSharp.Server.Adapters;
using PeftSharp.Tokenization;

namespace PeftSharp.Server.Engine;

/// <summary>The base model, its tokenizer and chat template, and the adapter backend around it.</summary>
public sealed class ServedModel(CausalLM model, ModelTokenizer tokenizer, IAdapterBackend adapters, string name)
{
    readonly object tokenizerGate = new();

    public CausalLM Model { get; } = model;
    public IAdapterBackend Adapters { get; } = adapters;
    /// <summary>The name requests use for the base model.</summary>
    public string Name { get; } = name;
    public ChatTemplate? ChatTemplate { get; } = ChatTemplate.FromTokenizer(tokenizer);
    public int ContextLength => Model.Config.ContextLength;

    /// <summary>Token ids that end a sequence (the config's eos ids and the tokenizer's).</summary>
    public IReadOnlySet<int> StopTokens { get; } = new HashSet<int>(
        model.Config.EosTokenIds.Concat(tokenizer.EosTokenId is int e ? [e] : []));

    // The tokenizer is shared by request threads (encoding) and the engine thread (decoding).
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens)
    {
        lock (tokenizerGate) return tokenizer.Encode(text, addSpecialTokens);
    }

    public string Decode(IReadOnlyList<int> ids)
    {
        lock (tokenizerGate) return tokenizer.Decode(ids, skipSpecialTokens: true);
    }

    public string RenderChat(IReadOnlyList<object?> messages)
    {
        var template = ChatTemplate ?? throw new InvalidOperationException("no chat template");
        lock (tokenizerGate) return template.Render(messages, addGenerationPrompt: true);
    }
}
