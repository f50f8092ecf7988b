using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Prompts;

/// <summary>Prompt tuning adapters (PEFT's <c>PromptEmbedding</c>): N trainable embeddings in front of the input.</summary>
public sealed class PromptTuningModel : PromptLearningModel<PromptTuningConfig>
{
    static readonly PromptTuningTuner TunerInstance = new();

    PromptTuningModel(CausalLM model) : base(model) { }

    /// <summary>A prompt-tuning model for <paramref name="model"/> without adapters yet.</summary>
    public static PromptTuningModel Attach(CausalLM model) => new(model);

    /// <summary>PEFT's get_peft_model with a PromptTuningConfig: one trainable, active adapter.</summary>
    public static PromptTuningModel Create(CausalLM model, PromptTuningConfig config, string adapter = AdapterFiles.DefaultAdapter, long? seed = null) =>
        WithAdapter(new PromptTuningModel(model), adapter, config, seed);

    /// <inheritdoc/>
    public override ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    protected override string MethodName => "prompt_tuning";
    /// <inheritdoc/>
    protected override int LayersOf(PromptTuningConfig config) => 1;

    /// <inheritdoc/>
    protected override PromptModule Create(string name, PromptTuningConfig config, bool inference, Generator gen)
    {
        using var initial = InitialPrompt(Model, config, inference, gen);
        return new PromptEmbedding(initial);
    }

    /// <summary>
    /// PEFT's <c>PromptEmbedding</c> init: the starting prompt [N, token_dim] in float32 (PEFT keeps prompt embeddings in
    /// float32): zeros for a saved adapter, the embeddings of the init text or of sampled vocabulary ids, else N(0, 1).
    /// </summary>
    internal static Tensor InitialPrompt(CausalLM model, PromptTuningConfig config, bool inference, Generator gen)
    {
        int n = config.TotalVirtualTokens, d = config.TokenDim!.Value;
        using var scope = NewDisposeScope();
        Tensor initial;
        if (inference) initial = zeros([n, d], ScalarType.Float32, model.Device);
        else if (config.PromptTuningInitMode is not (PromptTuningInit.Text or PromptTuningInit.SampleVocab))
            initial = randn([n, d], ScalarType.Float32, generator: gen).to(model.Device);
        else
        {
            var table = InputEmbedding(model);
            Tensor ids = config.PromptTuningInitMode == PromptTuningInit.SampleVocab
                ? randint(0, table.shape[0], [n], ScalarType.Int64, generator: gen)
                : tensor(TextInitIds(config, n).Select(i => (long)i).ToArray());
            using (no_grad()) initial = table.detach().index_select(0, ids.to(table.device)).to(ScalarType.Float32);
        }
        return initial.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// PEFT's TEXT init: <c>tokenizer(prompt_tuning_init_text)["input_ids"]</c> (special tokens included), cut to the
    /// first <paramref name="count"/> ids when longer, repeated ⌈count/len⌉ times and cut when shorter.
    /// </summary>
    public static IReadOnlyList<int> TextInitIds(PromptTuningConfig config, int count)
    {
        string dir = config.TokenizerNameOrPath!;
        if (!Directory.Exists(dir))
            throw new PeftSharpException($"tokenizer_name_or_path \"{dir}\": not a local folder; PeftSharp reads the tokenizer of a model folder (prompt_tuning_init TEXT)");
        var ids = ModelTokenizer.Load(dir).Encode(config.PromptTuningInitText!, addSpecialTokens: true).ToList();
        if (ids.Count == 0) throw new PeftSharpException($"prompt_tuning_init_text \"{config.PromptTuningInitText}\": tokenizes to no tokens");
        if (ids.Count > count) return ids.Take(count).ToList();
        int reps = (count + ids.Count - 1) / ids.Count;
        return Enumerable.Repeat(ids, reps).SelectMany(x => x).Take(count).ToList();
    }

    /// <summary>The model's input embedding table (GPT-2's <c>wte</c>, Llama's <c>embed_tokens</c>).</summary>
    internal static Tensor InputEmbedding(CausalLM model) =>
        model.named_parameters().FirstOrDefault(p => p.name is "transformer.wte.weight" or "model.embed_tokens.weight").parameter
        ?? throw new PeftSharpException("the model has no input embedding named transformer.wte or model.embed_tokens");

    /// <inheritdoc/>
    protected override IDisposable Register(PromptModule module, PromptTuningConfig config) =>
        Model.Extensions.AddInputRewrite(new VirtualTokenPrompt(module, config.TotalVirtualTokens));
}

/// <summary>P-tuning adapters (PEFT's <c>PromptEncoder</c>): virtual tokens produced by an MLP or LSTM encoder.</summary>
public sealed class PTuningModel : PromptLearningModel<PromptEncoderConfig>
{
    static readonly PTuningTuner TunerInstance = new();

    PTuningModel(CausalLM model) : base(model) { }

    /// <summary>A P-tuning model for <paramref name="model"/> without adapters yet.</summary>
    public static PTuningModel Attach(CausalLM model) => new(model);

    /// <summary>PEFT's get_peft_model with a PromptEncoderConfig: one trainable, active adapter.</summary>
    public static PTuningModel Create(CausalLM model, PromptEncoderConfig config, string adapter = AdapterFiles.DefaultAdapter, long? seed = null) =>
        WithAdapter(new PTuningModel(model), adapter, config, seed);

    /// <inheritdoc/>
    public override ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    protected override string MethodName => "p_tuning";
    /// <inheritdoc/>
    protected override int LayersOf(PromptEncoderConfig config) => 1;

    /// <inheritdoc/>
    protected override PromptModule Create(string name, PromptEncoderConfig config, bool inference, Generator gen) =>
        new PromptEncoder(config, inference, gen, Model.Device);

    /// <inheritdoc/>
    protected override IDisposable Register(PromptModule module, PromptEncoderConfig config) =>
        Model.Extensions.AddInputRewrite(new VirtualTokenPrompt(module, config.TotalVirtualTokens));
}

/// <summary>Prefix tuning / P-tuning v2 adapters (PEFT's <c>PrefixEncoder</c>): keys and values in front of every layer.</summary>
public sealed class PrefixTuningModel : PromptLearningModel<PrefixTuningConfig>
{
    static readonly PrefixTuningTuner TunerInstance = new();

    PrefixTuningModel(CausalLM model) : base(model) { }

    /// <summary>A prefix-tuning model for <paramref name="model"/> without adapters yet.</summary>
    public static PrefixTuningModel Attach(CausalLM model) => new(model);

    /// <summary>PEFT's get_peft_model with a PrefixTuningConfig: one trainable, active adapter.</summary>
    public static PrefixTuningModel Create(CausalLM model, PrefixTuningConfig config, string adapter = AdapterFiles.DefaultAdapter, long? seed = null) =>
        WithAdapter(new PrefixTuningModel(model), adapter, config, seed);

    /// <inheritdoc/>
    public override ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    protected override string MethodName => "prefix_tuning";
    /// <inheritdoc/>
    protected override int LayersOf(PrefixTuningConfig config) => config.NumLayers!.Value;

    /// <inheritdoc/>
    protected override PromptModule Create(string name, PrefixTuningConfig config, bool inference, Generator gen) =>
        new PrefixEncoder(config, inference, gen, Model.Device);

    /// <inheritdoc/>
    protected override IDisposable Register(PromptModule module, PrefixTuningConfig config) =>
        Model.Extensions.AddKvPrefix(new PrefixKeyValues(module, config));
}

/// <summary>Prompt tuning in the tuner registry (<c>peft_type: "PROMPT_TUNING"</c>).</summary>
public sealed class PromptTuningTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => PromptPeftTypes.PromptTuning;
    /// <inheritdoc/>
    public string Name => "prompt tuning";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => PromptTuningConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => PromptTuningModel.Attach(model);
}

/// <summary>P-tuning in the tuner registry (<c>peft_type: "P_TUNING"</c>).</summary>
public sealed class PTuningTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => PromptPeftTypes.PTuning;
    /// <inheritdoc/>
    public string Name => "P-tuning";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => PromptEncoderConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => PTuningModel.Attach(model);
}

/// <summary>Prefix tuning in the tuner registry (<c>peft_type: "PREFIX_TUNING"</c>).</summary>
public sealed class PrefixTuningTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => PromptPeftTypes.PrefixTuning;
    /// <inheritdoc/>
    public string Name => "prefix tuning";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => PrefixTuningConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => PrefixTuningModel.Attach(model);
}
