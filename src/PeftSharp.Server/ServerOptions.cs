namespace PeftSharp.Server;

/// <summary>Everything <c>peftsharp serve</c> is configured with; each limit has a default that suits one small server.</summary>
public sealed record ServerOptions
{
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>0 picks a free port (tests).</summary>
    public int Port { get; init; } = 8000;
    /// <summary>The name the base model answers to in the <c>model</c> field (default: the model folder's name).</summary>
    public string? ServedModelName { get; init; }
    /// <summary>When set, /v1/* needs <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; init; }
    /// <summary>Adapters loaded at start: name → folder.</summary>
    public IReadOnlyList<(string Name, string Dir)> Adapters { get; init; } = [];
    /// <summary>Where runtime loads must point into, and where adapters named in requests are looked up.</summary>
    public string? AdapterDir { get; init; }
    public bool AllowRuntimeAdapters { get; init; }
    public int MaxBatchSize { get; init; } = 16;
    public int MaxLoadedAdapters { get; init; } = 8;
    /// <summary>Positions (rows × padded prompt length) one prefill forward may hold; requests beyond it prefill in another forward.</summary>
    public int MaxPrefillTokens { get; init; } = 4096;
    public long MaxBodyBytes { get; init; } = 1 << 20;
    /// <summary>Prompt tokens allowed (null: the model's context minus one).</summary>
    public int? MaxPromptTokens { get; init; }
    /// <summary>The largest max_tokens a request may ask for.</summary>
    public int MaxTokensLimit { get; init; } = 2048;
    public int MaxConnections { get; init; } = 256;
    /// <summary>Requests waiting for a batch slot; beyond it requests are refused with 429.</summary>
    public int MaxQueue { get; init; } = 256;
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>How long SIGTERM waits for running requests to finish.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(30);

    public void Validate()
    {
        static void Positive(string flag, long v) { if (v <= 0) throw new PeftSharpException($"{flag}: expected a positive number, got {v}"); }
        Positive("--max-batch-size", MaxBatchSize);
        Positive("--max-loaded-adapters", MaxLoadedAdapters);
        Positive("--max-prefill-tokens", MaxPrefillTokens);
        Positive("--max-body-bytes", MaxBodyBytes);
        Positive("--max-tokens-limit", MaxTokensLimit);
        Positive("--max-connections", MaxConnections);
        Positive("--max-queue", MaxQueue);
        if (MaxPromptTokens is int p) Positive("--max-prompt-tokens", p);
        if (RequestTimeout <= TimeSpan.Zero) throw new PeftSharpException("--request-timeout: expected a positive number of seconds");
        if (Port is < 0 or > 65535) throw new PeftSharpException($"--port: expected 0..65535, got {Port}");
        if (AllowRuntimeAdapters && AdapterDir is null)
            throw new PeftSharpException("--allow-runtime-adapters needs --adapter-dir (runtime loads are confined to that folder)");
        if (AdapterDir is not null && !Directory.Exists(AdapterDir)) throw new PeftSharpException($"--adapter-dir: {AdapterDir}: folder not found");
    }
}
