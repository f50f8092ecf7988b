using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Prompts;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.MultitaskPrompt;

/// <summary>
/// Multitask prompt tuning adapters (PEFT's <c>MultitaskPromptEmbedding</c>, MPT): a shared prompt times a low-rank
/// task-specific matrix, chosen per example by its task id (<see cref="ExtensionPoints.UseTaskIds"/>).
/// </summary>
public sealed class MultitaskPromptModel : PromptLearningModel<MultitaskPromptTuningConfig>
{
    static readonly MultitaskPromptTuner TunerInstance = new();

    MultitaskPromptModel(CausalLM model) : base(model) { }

    /// <summary>A multitask prompt-tuning model for <paramref name="model"/> without adapters yet.</summary>
    public static MultitaskPromptModel Attach(CausalLM model) => new(model);

    /// <summary>PEFT's get_peft_model with a MultitaskPromptTuningConfig: one trainable, active adapter.</summary>
    public static MultitaskPromptModel Create(CausalLM model, MultitaskPromptTuningConfig config, string adapter = AdapterFiles.DefaultAdapter, long? seed = null) =>
        WithAdapter(new MultitaskPromptModel(model), adapter, config, seed);

    /// <inheritdoc/>
    public override ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    protected override string MethodName => "multitask_prompt_tuning";
    /// <inheritdoc/>
    protected override int LayersOf(MultitaskPromptTuningConfig config) => 1;

    /// <summary>The module of one adapter, with its task matrices.</summary>
    public MultitaskPromptEmbedding TaskModule(string adapter) => (MultitaskPromptEmbedding)Module(adapter);

    /// <inheritdoc/>
    protected override PromptModule Create(string name, MultitaskPromptTuningConfig config, bool inference, Generator gen)
    {
        using var initial = PromptTuningModel.InitialPrompt(Model, config, inference, gen);
        var module = new MultitaskPromptEmbedding(initial, config.NumTasks!.Value, config.NumRanks!.Value, gen);
        if (!inference && MultitaskPromptTuningInit.FromSource.Contains(config.PromptTuningInitMode))
        {
            try { MultitaskPromptFiles.InitFromSource(module, config); }
            catch { module.Dispose(); throw; }
        }
        return module;
    }

    /// <inheritdoc/>
    protected override IDisposable Register(PromptModule module, MultitaskPromptTuningConfig config) =>
        Model.Extensions.AddInputRewrite(new TaskPrompt((MultitaskPromptEmbedding)module, config.TotalVirtualTokens, Model.Extensions));

    /// <inheritdoc/>
    public override void LoadAdapter(string dir, string name, bool trainable = false) => MultitaskPromptFiles.LoadAdapter(this, dir, name, trainable);

    /// <inheritdoc/>
    public override string SaveAdapter(string dir, string name, string? baseModelNameOrPath = null) => MultitaskPromptFiles.Save(this, dir, name, baseModelNameOrPath);

    /// <summary>The prompt an example of task <paramref name="task"/> gets, [N, token_dim], detached.</summary>
    public Tensor TaskPromptOf(string adapter, int task)
    {
        using var _ = no_grad();
        var module = TaskModule(adapter);
        using var ids = tensor(new long[] { task });
        using var checkedIds = TaskIdRange.Check(ids, 1, module.Tasks, "multitask prompt tuning");
        using var prompts = module.Prompts(checkedIds);
        return prompts[0].detach().clone();
    }
}

/// <summary>Multitask prompt tuning in the tuner registry (<c>peft_type: "MULTITASK_PROMPT_TUNING"</c>).</summary>
public sealed class MultitaskPromptTuner : ITuner
{
    /// <inheritdoc/>
    public string PeftType => MultitaskPromptTuningConfig.Type;
    /// <inheritdoc/>
    public string Name => "multitask prompt tuning";
    /// <inheritdoc/>
    public PeftConfig LoadConfig(string adapterDir) => MultitaskPromptTuningConfig.Load(adapterDir);
    /// <inheritdoc/>
    public ITunerModel Attach(CausalLM model) => MultitaskPromptModel.Attach(model);
}
