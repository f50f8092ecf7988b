using System.Threading.Channels;

namespace PeftSharp.Server.Engine;

/// <summary>How one request samples and when it stops.</summary>
public sealed record SamplingParams(
    int MaxTokens,
    double Temperature = 1.0,
    double TopP = 1.0,
    int Seed = 0,
    IReadOnlyList<string>? Stop = null,
    /// <summary>null: no log-probabilities; k ≥ 0: the chosen token's and the k most likely ones.</summary>
    int? Logprobs = null,
    /// <summary>vLLM's ignore_eos: keep generating past end-of-sequence tokens (benchmarks).</summary>
    bool IgnoreEos = false);

/// <summary>A token's log-probability and, when asked for, the most likely alternatives at that step.</summary>
public sealed record TokenLogprob(string Token, double Logprob, IReadOnlyList<(string Token, double Logprob)> Top);

/// <summary>What the engine tells the endpoint about one request, in order.</summary>
public abstract record GenerationEvent;

/// <summary>New text (possibly empty when only tokens arrived) and the tokens that produced it.</summary>
public sealed record TextDelta(string Text, IReadOnlyList<TokenLogprob>? Logprobs) : GenerationEvent;

/// <summary>The request ended normally: "stop" (end of sequence or a stop string) or "length".</summary>
public sealed record Finished(string Reason, int PromptTokens, int CompletionTokens) : GenerationEvent;

/// <summary>The request failed after it was accepted (HTTP status, OpenAI error type, message).</summary>
public sealed record Failed(int Status, string Type, string Message, string? Code = null) : GenerationEvent;

/// <summary>
/// One generation: prompt token ids, the adapter (null: the base model), sampling settings, and the channel its
/// events go to. The engine only writes to that channel (unbounded, at most max_tokens events), so a slow
/// client never holds up the batch; <see cref="Cancel"/> (client gone) drops the row at the next step.
/// </summary>
public sealed class GenerationRequest(IReadOnlyList<int> promptIds, string? adapter, SamplingParams sampling, DateTime deadline)
{
    readonly Channel<GenerationEvent> events = Channel.CreateUnbounded<GenerationEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    volatile bool cancelled;

    public IReadOnlyList<int> PromptIds { get; } = promptIds;
    public string? Adapter { get; } = adapter;
    public SamplingParams Sampling { get; } = sampling;
    public DateTime Deadline { get; } = deadline;
    public DateTime Arrived { get; } = DateTime.UtcNow;

    public ChannelReader<GenerationEvent> Events => events.Reader;
    public bool Cancelled => cancelled;
    public void Cancel() => cancelled = true;

    internal void Emit(GenerationEvent e)
    {
        events.Writer.TryWrite(e);
        if (e is Finished or Failed) events.Writer.TryComplete();
    }
}
