using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Embedding = PeftSharp.Models.Layers.Embedding;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>
/// A model with AdaLoRA adapters, as PEFT's <c>AdaLoraModel</c>: SVD-form adapters of rank <c>init_r</c> on the target
/// linear layers, the orthogonal regulariser to add to the training loss, and <see cref="UpdateAndAllocate"/> to call
/// after every optimizer step (before the gradients are dropped). Several adapters may be loaded side by side; at most
/// one is trainable (it owns the <see cref="RankAllocator"/>).
/// </summary>
public sealed partial class AdaLoraModel
{
    /// <summary>PEFT's TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING (model types without an entry need target_modules).</summary>
    static readonly Dictionary<string, TargetModules> DefaultTargets = new(StringComparer.Ordinal)
    {
        ["t5"] = TargetModules.FromNames("q", "k", "v", "o", "wi", "wo"),
        ["mt5"] = TargetModules.FromNames("q", "k", "v", "o", "wi_0", "wi_1", "wo"),
        ["bart"] = TargetModules.FromNames("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
        ["gpt2"] = TargetModules.FromNames("c_attn"),
        ["bloom"] = TargetModules.FromNames("query_key_value"),
        ["opt"] = TargetModules.FromNames("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
        ["gptj"] = TargetModules.FromNames("q_proj", "v_proj"),
        ["gpt_neox"] = TargetModules.FromNames("query_key_value"),
        ["gpt_neo"] = TargetModules.FromNames("q_proj", "v_proj"),
        ["llama"] = TargetModules.FromNames("q_proj", "v_proj"),
        ["llama4"] = TargetModules.FromNames("q_proj", "v_proj"),
        ["bert"] = TargetModules.FromNames("query", "value"),
        ["roberta"] = TargetModules.FromNames("query", "key", "value", "dense"),
        ["deberta-v2"] = TargetModules.FromNames("query_proj", "key_proj", "value_proj", "dense"),
        ["gpt_bigcode"] = TargetModules.FromNames("c_attn"),
        ["deberta"] = TargetModules.FromNames("in_proj"),
        ["gemma"] = TargetModules.FromNames("q_proj", "v_proj"),
        ["gemma2"] = TargetModules.FromNames("q_proj", "v_proj"),
        ["gemma3_text"] = TargetModules.FromNames("q_proj", "v_proj"),
        ["gemma4"] = TargetModules.FromRegex(@".*language_model\..*\.(q_proj|v_proj)"),
        ["qwen2"] = TargetModules.FromNames("q_proj", "v_proj"),
        ["qwen3"] = TargetModules.FromNames("q_proj", "v_proj"),
        ["nemotron_h"] = TargetModules.FromNames("q_proj", "k_proj", "v_proj", "o_proj"),
    };

    readonly Dictionary<string, AdaLoraConfig> configs = new(StringComparer.Ordinal);
    readonly Dictionary<string, SvdLinear> layers = new(StringComparer.Ordinal);
    readonly Dictionary<string, bool> trainable = new(StringComparer.Ordinal);
    string[] active = [];

    AdaLoraModel(nn.Module root, string? modelType)
    {
        Root = root;
        ModelType = modelType;
        foreach (var p in root.parameters()) p.requires_grad = false;
    }

    /// <summary>The module the adapters were attached under (the language model).</summary>
    public nn.Module Root { get; }
    /// <summary>The config's model_type (selects the default target modules), or null.</summary>
    public string? ModelType { get; }
    /// <inheritdoc/>
    public CausalLM Model => Root as CausalLM ?? throw new InvalidOperationException("the AdaLoRA root is not a CausalLM");
    /// <summary>Adapter configs by name.</summary>
    public IReadOnlyDictionary<string, AdaLoraConfig> Configs => configs;
    /// <inheritdoc/>
    public IReadOnlyList<string> ActiveAdapters => active;
    /// <summary>AdaLoRA layers by module path (e.g. <c>transformer.h.0.attn.c_attn</c>).</summary>
    public IReadOnlyDictionary<string, SvdLinear> Layers => layers;
    /// <summary>The adapter being trained (PEFT's trainable_adapter_name), or null when every adapter is frozen.</summary>
    public string? TrainableAdapter { get; private set; }
    /// <summary>The trainable adapter's allocator; null when no adapter is trainable.</summary>
    public RankAllocator? Allocator { get; private set; }

    /// <summary>PEFT's <c>get_peft_model</c> with an AdaLoraConfig: freeze the base model and add one trainable adapter.</summary>
    public static AdaLoraModel Create(CausalLM model, AdaLoraConfig config, string adapterName = "default", long? seed = null, bool trainable = true) =>
        Create(model, model.Config.ModelType, config, adapterName, seed, trainable);

    /// <summary>AdaLoRA on any module tree of PeftSharp <see cref="Linear"/> layers (without a model type, target_modules is required).</summary>
    public static AdaLoraModel Create(nn.Module root, string? modelType, AdaLoraConfig config, string adapterName = "default", long? seed = null, bool trainable = true)
    {
        var ada = new AdaLoraModel(root, modelType);
        ada.AddAdapter(adapterName, config, seed, trainable);
        ada.SetAdapter(adapterName);
        return ada;
    }

    static bool IsAdapterPath(string path) => path.Split('.').Any(s => s.StartsWith("lora_", StringComparison.Ordinal) || s == "ranknum");

    /// <summary>
    /// Adds an adapter of rank init_r on every target layer (inactive until <see cref="SetAdapter"/>). A trainable
    /// adapter gets the rank allocator; only one adapter may be trainable (PEFT's rule).
    /// </summary>
    public void AddAdapter(string name, AdaLoraConfig config, long? seed = null, bool trainable = true)
    {
        if (configs.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists");
        if (name.Contains('.') || name.Length == 0) throw new PeftSharpException($"adapter name \"{name}\" must be non-empty and contain no '.'");
        if (trainable && TrainableAdapter is not null)
            throw new PeftSharpException($"AdaLoRA supports only 1 trainable adapter (\"{TrainableAdapter}\" is); add \"{name}\" as frozen");
        if (config.UseDora) throw new PeftSharpException("ADALORA does not support DoRA");
        if (config.Bias != "none") throw new PeftSharpException($"bias \"{config.Bias}\" is not supported with AdaLoRA in PeftSharp (use \"none\")");
        if (config.ModulesToSave is { Count: > 0 }) throw new PeftSharpException("modules_to_save is not supported with AdaLoRA in PeftSharp");
        if (config.InitR < 0) throw new PeftSharpException($"init_r must be 0 or more, got {config.InitR}");
        config.TargetModules ??= (ModelType is not null && DefaultTargets.TryGetValue(ModelType, out var t) ? t : null)
            ?? throw new PeftSharpException($"target_modules: AdaLoRA has no default for model_type \"{ModelType ?? "(custom module)"}\"; give target_modules");
        var candidates = Root.named_modules()
            .Where(m => (m.module is Linear || m.module is Embedding) && !IsAdapterPath(m.name))
            .Select(m => (Path: m.name, Module: m.module)).ToList();
        if (config.TargetModules.IsAllLinear)
            ModuleMatcher.ExpandAllLinear(config, candidates.Where(c => c.Module is Linear).Select(c => c.Path), ["lm_head"]);
        using var gen = seed is long s ? new Generator((ulong)s) : null;
        bool init = config.InitLoraWeights.Flag != false;
        var added = new List<string>();
        foreach (var (path, module) in candidates)
        {
            if (!ModuleMatcher.IsTarget(config, path)) continue;
            if (module is not Linear linear)
                throw new PeftSharpException($"target module {path} is not supported: AdaLoRA adapts linear layers (nn.Linear, Conv1D) only");
            config.FanInFanOut = linear.FanInFanOut;   // as PEFT: follows the layer it finds
            if (!layers.TryGetValue(path, out var layer)) layers[path] = layer = new SvdLinear(linear);
            layer.AddAdapter(name, config.InitR, config.LoraAlpha, config.LoraDropout, init, gen);
            added.Add(path);
        }
        if (added.Count == 0)
        {
            var names = candidates.Select(c => c.Path.Split('.')[^1]).Distinct().OrderBy(n => n, StringComparer.Ordinal);
            throw new PeftSharpException(
                $"target_modules {config.TargetModules} matched no layer of this {ModelType ?? "custom"} model; its layers are named: {string.Join(", ", names)}");
        }
        configs[name] = config;
        this.trainable[name] = trainable;
        if (trainable)
        {
            TrainableAdapter = name;
            Allocator = new RankAllocator(this, config, name);
        }
        UpdateRequiresGrad();
    }

    /// <summary>Makes these adapters the active ones (outputs are summed, as PEFT); only the trainable one among them gets gradients.</summary>
    public void SetAdapter(params string[] names)
    {
        foreach (var n in names)
            if (!configs.ContainsKey(n)) throw new PeftSharpException($"no adapter named \"{n}\" (have: {string.Join(", ", configs.Keys)})");
        active = names;
        foreach (var layer in layers.Values) layer.ActiveAdapters = names;
        UpdateRequiresGrad();
    }

    void UpdateRequiresGrad()
    {
        foreach (var (_, param, adapter) in AdapterParameters())
            param.requires_grad = active.Contains(adapter) && trainable[adapter];
    }

    /// <summary>Every AdaLoRA parameter (lora_A, lora_B, lora_E; not the frozen ranknum) with its name and adapter.</summary>
    public IEnumerable<(string Name, Parameter Param, string Adapter)> AdapterParameters()
    {
        foreach (var (path, layer) in layers)
            foreach (var adapter in layer.Adapters)
            {
                yield return ($"{path}.lora_A.{adapter}", layer.A(adapter), adapter);
                yield return ($"{path}.lora_B.{adapter}", layer.B(adapter), adapter);
                yield return ($"{path}.lora_E.{adapter}", layer.E(adapter), adapter);
            }
    }

    /// <summary>Parameters that training updates, by name (requires_grad = true).</summary>
    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters() =>
        Root.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();

    /// <summary>PEFT's <c>print_trainable_parameters</c> line (ranknum counts among all params, as in PEFT).</summary>
    public string ParameterReport()
    {
        long all = Root.parameters().Sum(p => p.numel());
        long train = Root.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        return PeftModel.FormatReport(train, all);
    }

    /// <summary>
    /// The term PEFT's AdaLoraModel.forward adds to the loss: orth_reg_weight × the mean over the trainable adapter's
    /// A and B matrices of ‖A·Aᵀ − I‖_F and ‖BᵀB − I‖_F (the Frobenius norm itself, not its square). Null when no
    /// adapter is trainable.
    /// </summary>
    public Tensor? OrthogonalRegularization()
    {
        if (TrainableAdapter is not string adapter) return null;
        double weight = configs[adapter].OrthRegWeight;
        if (weight < 0) throw new PeftSharpException("orth_reg_weight should be greater than or equal to 0");
        using var scope = NewDisposeScope();
        Tensor? sum = null;
        int count = 0;
        foreach (var layer in layers.Values.Where(l => l.Contains(adapter)))
        {
            var a = layer.A(adapter);
            var b = layer.B(adapter);
            foreach (var cov in new[] { a.matmul(a.t()), b.t().matmul(b) })
            {
                var eye = torch.eye(cov.shape[0], cov.shape[1], cov.dtype, cov.device);
                var norm = linalg.vector_norm(cov.sub(eye));
                sum = sum is null ? norm : sum.add(norm);
                count++;
            }
        }
        if (sum is null) return null;
        return sum.div(count).mul(weight).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// PEFT's <c>AdaLoraModel.update_and_allocate</c>; call it after each optimizer step and before the gradients are
    /// dropped, with the number of steps done (PEFT's global_step). Before step total_step − tfinal it updates the
    /// importance scores and, when the schedule says so, prunes to the budget; at that step it makes the final
    /// allocation (budget target_r × layers) and forgets the scores; afterwards it re-applies the final allocation, so
    /// pruned singular values stay exactly zero. The allocation is kept in the adapter's config (<c>rank_pattern</c>).
    /// </summary>
    public void UpdateAndAllocate(long globalStep)
    {
        if (TrainableAdapter is not string adapter || Allocator is null)
            throw new PeftSharpException("AdaLoRA: no trainable adapter to allocate ranks for");
        var config = configs[adapter];
        long total = config.TotalStep is int t && t > 0 ? t : throw new PeftSharpException("AdaLoRA: total_step must be set (> 0) before training");
        long final = total - config.Tfinal;
        if (globalStep < final)
        {
            var (_, pattern) = Allocator.UpdateAndAllocate(globalStep);
            if (pattern is { Count: > 0 }) config.RankPattern = pattern;
        }
        else if (globalStep == final)
        {
            var (_, pattern) = Allocator.UpdateAndAllocate(globalStep, forceMask: true);
            config.RankPattern = pattern;
            Allocator.ResetImportance();
        }
        else
        {
            Allocator.MaskUsingRankPattern(config.RankPattern
                ?? throw new PeftSharpException("AdaLoRA: the final phase needs the rank_pattern of the final allocation"));
        }
    }

    /// <summary>The kept-triplet flags of <paramref name="path"/> in a rank_pattern (keys with or without the adapter name).</summary>
    internal static IReadOnlyList<bool>? PatternFor(IReadOnlyDictionary<string, IReadOnlyList<bool>> pattern, string path, string adapter) =>
        pattern.TryGetValue($"{path}.lora_E", out var keep) || pattern.TryGetValue($"{path}.lora_E.{adapter}", out keep) ? keep : null;

    /// <summary>
    /// PEFT's <c>resize_modules_by_rank_pattern</c>: shrinks every layer of the adapter to the triplets its config's
    /// rank_pattern keeps (ranknum, hence the scaling, unchanged). Used when loading a pruned adapter.
    /// </summary>
    public void ResizeByRankPattern(string adapter)
    {
        if (configs[adapter].RankPattern is not { } pattern) return;
        foreach (var key in pattern.Keys)
        {
            string path = key.EndsWith($".lora_E.{adapter}", StringComparison.Ordinal) ? key[..^($".lora_E.{adapter}".Length)]
                : key.EndsWith(".lora_E", StringComparison.Ordinal) ? key[..^".lora_E".Length]
                : throw new PeftSharpException($"rank_pattern key \"{key}\" does not end in \".lora_E\"");
            if (!layers.TryGetValue(path, out var layer) || !layer.Contains(adapter))
                throw new PeftSharpException($"rank_pattern names {path}, which has no AdaLoRA adapter \"{adapter}\" in this model");
        }
        foreach (var (path, layer) in layers)
            if (layer.Contains(adapter) && PatternFor(pattern, path, adapter) is { } keep) layer.Resize(adapter, keep);
        if (adapter == TrainableAdapter) Allocator = new RankAllocator(this, configs[adapter], adapter);
        UpdateRequiresGrad();
    }

    /// <summary>The rank each layer keeps: the true flags of the rank_pattern, or the factors' rank without one.</summary>
    public IReadOnlyDictionary<string, int> KeptRanks(string adapter = AdapterFiles.DefaultAdapter)
    {
        var pattern = configs[adapter].RankPattern;
        return layers.Where(l => l.Value.Contains(adapter)).ToDictionary(
            l => l.Key,
            l => pattern is not null && PatternFor(pattern, l.Key, adapter) is { } keep && keep.Count == l.Value.RankOf(adapter)
                ? keep.Count(k => k) : l.Value.RankOf(adapter),
            StringComparer.Ordinal);
    }

    /// <summary>While the returned scope lives, layers compute the base model only (PEFT's disable_adapter()).</summary>
    public IDisposable DisableAdapters()
    {
        foreach (var l in layers.Values) l.Disabled = true;
        return new OnDispose(() => { foreach (var l in layers.Values) l.Disabled = false; });
    }

    /// <summary>Folds the given (default: active) adapters into the base weights; safe refuses non-finite results.</summary>
    public void Merge(IEnumerable<string>? adapters = null, bool safe = false)
    {
        var names = (adapters ?? active).ToList();
        foreach (var l in layers.Values) l.Merge(names, safe);
    }

    /// <inheritdoc/>
    public void Unmerge()
    {
        foreach (var l in layers.Values) l.Unmerge();
    }

    /// <summary>Merges the active adapters and removes every AdaLoRA layer (PEFT's merge_and_unload).</summary>
    public nn.Module MergeAndUnload(bool safe = false, IEnumerable<string>? adapters = null)
    {
        Merge(adapters, safe);
        return Unload();
    }

    /// <summary>Removes every AdaLoRA layer without merging (PEFT's unload()); merged adapters stay folded in.</summary>
    public nn.Module Unload()
    {
        foreach (var l in layers.Values) l.Detach();
        layers.Clear();
        configs.Clear();
        trainable.Clear();
        Allocator?.ResetImportance();
        Allocator = null;
        TrainableAdapter = null;
        foreach (var p in Root.parameters()) p.requires_grad = false;
        return Root;
    }
}
