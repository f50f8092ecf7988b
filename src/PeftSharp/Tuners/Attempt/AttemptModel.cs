using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using PeftSharp.Tuners.Prompts;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Attempt;

/// <summary>
/// ATTEMPT adapters (Asai et al. 2022): each sequence's prompt is the target prompt plus an attention-weighted sum of
/// frozen source prompts and the target, the weights computed from the sequence's own input embeddings.
/// </summary>
public sealed class AttemptModel : PromptLearningModel<AttemptConfig>
{
    static readonly AttemptTuner TunerInstance = new();

    AttemptModel(CausalLM model) : base(model) { }

    /// <summary>An ATTEMPT model for <paramref name="model"/> without adapters yet.</summary>
    public static AttemptModel Attach(CausalLM model) => new(model);

    /// <summary>One trainable, active ATTEMPT adapter whose config lists its source prompt folders.</summary>
    public static AttemptModel Create(CausalLM model, AttemptConfig config, string adapter = AdapterFiles.DefaultAdapter, long? seed = null) =>
        WithAdapter(new AttemptModel(model), adapter, config, seed);

    /// <inheritdoc/>
    public override ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    protected override string MethodName => "attempt";
    /// <inheritdoc/>
    protected override int LayersOf(AttemptConfig config) => 1;

    /// <summary>The module of one adapter, with its sources and attention network.</summary>
    public AttemptPromptModule AttemptModule(string adapter) => (AttemptPromptModule)Module(adapter);

    /// <inheritdoc/>
    protected override PromptModule Create(string name, AttemptConfig config, bool inference, Generator gen)
    {
        int n = config.TotalVirtualTokens, d = config.TokenDim!.Value, k = config.NumSources!.Value;
        using var target = inference || config.TargetInit == "ZERO"
            ? zeros([n, d], ScalarType.Float32, Model.Device)
            : randn([n, d], ScalarType.Float32, generator: gen).to(Model.Device);
        using var sources = inference ? zeros([k, n, d], ScalarType.Float32) : ReadSources(config, n, d);
        return new AttemptPromptModule(target, sources, config.AttnHiddenSize, config.EffectiveTemperature, gen);
    }

    /// <summary>The source prompts of <c>source_prompts</c>, [K, N, D]; each folder's <c>prompt_embeddings</c> must be [N, D].</summary>
    static Tensor ReadSources(AttemptConfig config, int n, int d)
    {
        if (config.SourcePrompts is not { Count: > 0 } dirs)
            throw new PeftSharpException("ATTEMPT: field 'source_prompts' is empty; a new adapter needs the source prompt folders");
        using var scope = NewDisposeScope();
        var list = new List<Tensor>();
        foreach (var dir in dirs)
        {
            string weights = AdapterFiles.WeightsPath(dir);
            using var file = SafetensorsFile.Open(weights);
            if (!file.Tensors.TryGetValue(PromptFiles.TensorName, out var info))
                throw new PeftSharpException($"{weights}: missing tensor '{PromptFiles.TensorName}' (ATTEMPT's sources are soft-prompt adapters)");
            if (!info.Shape.SequenceEqual(new long[] { n, d }))
                throw new PeftSharpException($"{weights}: source prompt '{PromptFiles.TensorName}' is [{string.Join(", ", info.Shape)}] but this ATTEMPT adapter needs [{n}, {d}] (num_virtual_tokens × hidden size)");
            list.Add(file.Read(PromptFiles.TensorName, CPU, ScalarType.Float32));
        }
        return stack(list).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    protected override IDisposable Register(PromptModule module, AttemptConfig config) =>
        Model.Extensions.AddInputRewrite(new AttemptPrompt((AttemptPromptModule)module, config.TotalVirtualTokens, Model.Extensions));

    /// <inheritdoc/>
    public override void LoadAdapter(string dir, string name, bool trainable = false) => AttemptFiles.LoadAdapter(this, dir, name, trainable);

    /// <inheritdoc/>
    public override string SaveAdapter(string dir, string name, string? baseModelNameOrPath = null) => AttemptFiles.Save(this, dir, name, baseModelNameOrPath);
}

/// <summary>Extension point 4 for ATTEMPT: each sequence's own prompt in front of its token embeddings.</summary>
internal sealed class AttemptPrompt(AttemptPromptModule module, int tokens, ExtensionPoints extensions) : IInputEmbeddingRewrite
{
    public int PrependedTokens => tokens;

    public Tensor Rewrite(Tensor embeddings, Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var prompts = module.Prompts(embeddings, extensions.InputAttentionMask).to(embeddings.dtype, embeddings.device);
        return cat([prompts, embeddings], 1).MoveToOuterDisposeScope();
    }
}

/// <summary>ATTEMPT in the tuner registry (<c>peft_type: "ATTEMPT"</c>, PeftSharp's own).</summary>
public sealed class AttemptTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => AttemptConfig.Type;
    /// <inheritdoc/>
    public string Name => "ATTEMPT";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => AttemptConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => AttemptModel.Attach(model);
}
