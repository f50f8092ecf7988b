using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Embedding = PeftSharp.Models.Layers.Embedding;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// A model with LoRA adapters, as PEFT's <c>LoraModel</c> / <c>get_peft_model</c>: finds the target layers,
/// attaches adapters under PEFT's parameter names, freezes everything else, and switches, disables, merges
/// and unloads adapters by name.
/// </summary>
public sealed partial class LoraModel
{
    readonly Dictionary<string, LoraConfig> configs = new(StringComparer.Ordinal);
    readonly Dictionary<string, LoraLinear> linears = new(StringComparer.Ordinal);
    readonly Dictionary<string, LoraEmbedding> embeddings = new(StringComparer.Ordinal);
    readonly Dictionary<string, ModulesToSave> modulesToSave = new(StringComparer.Ordinal);
    readonly Dictionary<string, bool> trainable = new(StringComparer.Ordinal);
    string[] active = [];

    LoraModel(nn.Module root, string? modelType)
    {
        Root = root;
        ModelType = modelType;
        foreach (var p in root.parameters()) p.requires_grad = false;
    }

    /// <summary>The module tree the adapters live in (a <see cref="CausalLM"/>, or a user's own module).</summary>
    public nn.Module Root { get; }
    /// <summary>The Hugging Face model_type, which picks PEFT's default target_modules (null for custom modules).</summary>
    public string? ModelType { get; }
    /// <summary>The language model, when the root is one of ours.</summary>
    public CausalLM Model => Root as CausalLM ?? throw new InvalidOperationException("the LoRA root is not a CausalLM");
    /// <summary>Adapter configs by name.</summary>
    public IReadOnlyDictionary<string, LoraConfig> Configs => configs;
    /// <inheritdoc/>
    public IReadOnlyList<string> ActiveAdapters => active;
    /// <summary>LoRA layers by module path (e.g. <c>transformer.h.0.attn.c_attn</c>).</summary>
    public IReadOnlyDictionary<string, LoraLinear> LinearLayers => linears;
    /// <summary>LoRA layers on embeddings by module path.</summary>
    public IReadOnlyDictionary<string, LoraEmbedding> EmbeddingLayers => embeddings;

    /// <summary>Every LoRA layer, linear and embedding.</summary>
    IEnumerable<LoraLayer> AllLayers => linears.Values.Concat<LoraLayer>(embeddings.Values);

    /// <summary>PEFT's <c>get_peft_model</c>: freeze the base model and add one trainable adapter.</summary>
    public static LoraModel Create(CausalLM model, LoraConfig config, string adapterName = "default", long? seed = null) =>
        Create(model, model.Config.ModelType, config, adapterName, seed);

    /// <summary>
    /// LoRA on any TorchSharp module tree whose layers are PeftSharp's <see cref="Linear"/> / <see cref="Embedding"/>
    /// (module paths come from the field names). Without a model type, target_modules must be given.
    /// </summary>
    public static LoraModel Create(nn.Module root, string? modelType, LoraConfig config, string adapterName = "default", long? seed = null)
    {
        var lora = new LoraModel(root, modelType);
        lora.AddAdapter(adapterName, config, seed, trainable: true);
        lora.SetAdapter(adapterName);
        return lora;
    }

    /// <summary>Target module paths: Linear and Embedding layers of the base model (not LoRA's own factors, nor the layers
    /// other tuners added, such as a bottleneck adapter's projections: extension point 1's list for a CausalLM).</summary>
    IEnumerable<(string Path, nn.Module Module)> Candidates() =>
        Root is CausalLM lm
            ? lm.Extensions.TunableLayers().Where(t => t.Layer is Linear || t.Layer is Embedding).Select(t => (t.Path, (nn.Module)t.Layer))
            : Root.named_modules()
                .Where(m => (m.module is Linear || m.module is Embedding) && !IsAdapterPath(m.name))
                .Select(m => (m.name, m.module));

    /// <summary>
    /// QA-LoRA needs a group-quantized base: the targets must be linear layers whose in_features qalora_group_size
    /// divides, and a full-precision base is quantized here (every linear layer but lm_head, qalora_bits, groups of
    /// qalora_group_size, round-to-nearest) unless it already holds GPTQ quantizations, which must have qalora_bits.
    /// </summary>
    void PrepareQaloraBase(LoraConfig config, IReadOnlyList<(string Path, nn.Module Module)> candidates)
    {
        int group = config.QaloraGroupSize, bits = config.QaloraBits;
        Quantization.Gptq.GptqConfig.CheckBits(bits, LoraConfig.QaloraBitsKey);
        foreach (var (path, module) in candidates)
        {
            if (!ModuleMatcher.IsTarget(config, path)) continue;
            if (module is not Linear linear) throw new PeftSharpException($"use_qalora: {path} is not a linear layer (QA-LoRA adapts linear layers only)");
            if (group <= 0 || linear.InFeatures % group != 0)
                throw new PeftSharpException($"qalora_group_size (--group-size) {group} does not divide in_features {linear.InFeatures} of {path}");
            if (linear.IsQuantized) throw new PeftSharpException($"use_qalora: {path} is a 4-bit (bitsandbytes) layer; QA-LoRA needs a full-precision or GPTQ base");
        }
        var existing = Quantization.Gptq.GptqLayers.Quantized(Root).Select(q => q.Weight).FirstOrDefault();
        if (existing is not null)
        {
            if (existing.Bits != bits)
                throw new PeftSharpException($"qalora_bits (--bits) {bits} does not match the GPTQ base, which has {existing.Bits} bits");
            return;
        }
        Quantization.Gptq.GptqLayers.QuantizeRoundToNearest(Root, bits, group);
    }

    static bool IsAdapterPath(string path) => path.Split('.').Any(s => s.StartsWith("lora_", StringComparison.Ordinal));

    /// <summary>Adds an adapter (inactive until <see cref="SetAdapter"/>), with PEFT's targeting rules and defaults.</summary>
    public void AddAdapter(string name, LoraConfig config, long? seed = null, bool trainable = true)
    {
        if (configs.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists");
        if (name.Contains('.') || name.Length == 0) throw new PeftSharpException($"adapter name \"{name}\" must be non-empty and contain no '.'");
        config.TargetModules ??= (ModelType is null ? null : LoraDefaults.TargetModulesFor(ModelType))
            ?? throw new PeftSharpException($"target_modules: no default for model_type \"{ModelType ?? "(custom module)"}\"; give target_modules");
        var candidates = Candidates().ToList();
        if (config.TargetModules.IsAllLinear)
        {
            // PEFT's all-linear: every linear layer except the output head.
            ModuleMatcher.ExpandAllLinear(config, candidates.Where(c => c.Module is Linear).Select(c => c.Path), ["lm_head"]);
        }
        if (config.UseQalora) PrepareQaloraBase(config, candidates);
        using var gen = seed is long s ? new Generator((ulong)s) : null;
        int matched = 0;
        foreach (var (path, module) in candidates)
        {
            if (!ModuleMatcher.IsTarget(config, path)) continue;
            matched++;
            var settings = new LoraAdapterSettings(
                ModuleMatcher.RankFor(config, path), ModuleMatcher.AlphaFor(config, path), config.LoraDropout,
                config.UseRslora, config.UseDora, config.LoraBias, InitName(config.InitLoraWeights))
            {
                LoftqBits = (int)(LoraSubConfigs.Number(config.LoftqConfig ?? [], "loftq_bits") ?? 4),
                LoftqIter = (int)(LoraSubConfigs.Number(config.LoftqConfig ?? [], "loftq_iter") ?? 1),
                QaloraGroupSize = config.UseQalora ? config.QaloraGroupSize : null,
            };
            if (module is Linear linear)
            {
                // PEFT sets fan_in_fan_out to match the layer it finds (true for GPT-2's Conv1D).
                config.FanInFanOut = linear.FanInFanOut;
                if (!linears.TryGetValue(path, out var layer)) linears[path] = layer = new LoraLinear(linear);
                layer.AddAdapter(name, settings, ScalarType.Float32, gen);
            }
            else if (module is Embedding embedding)
            {
                if (!embeddings.TryGetValue(path, out var layer)) embeddings[path] = layer = new LoraEmbedding(embedding);
                layer.AddAdapter(name, settings, ScalarType.Float32, gen);
            }
        }
        if (matched == 0)
        {
            var names = candidates.Select(c => c.Path.Split('.')[^1]).Distinct().OrderBy(n => n, StringComparer.Ordinal);
            throw new PeftSharpException(
                $"target_modules {config.TargetModules} matched no layer of this {ModelType ?? "custom"} model; its layers are named: {string.Join(", ", names)}");
        }
        foreach (var path in config.ModulesToSave ?? [])
        {
            var found = Root.named_modules().Where(m => !IsAdapterPath(m.name) && (m.name == path || m.name.EndsWith("." + path, StringComparison.Ordinal))).ToList();
            if (found.Count == 0) throw new PeftSharpException($"modules_to_save: no module named \"{path}\" in this model");
            foreach (var (modulePath, module) in found)
            {
                if (!modulesToSave.TryGetValue(modulePath, out var m)) modulesToSave[modulePath] = m = new ModulesToSave(modulePath, module);
                m.AddAdapter(name);
            }
        }
        configs[name] = config;
        this.trainable[name] = trainable;
    }

    static string InitName(InitLoraWeights init) => init.Flag switch
    {
        true => "true",
        false => "false",
        _ => init.Method!,
    };

    /// <summary>Makes these adapters the active ones (their outputs are summed, as PEFT); only they are trainable.</summary>
    public void SetAdapter(params string[] names)
    {
        foreach (var n in names)
            if (!configs.ContainsKey(n)) throw new PeftSharpException($"no adapter named \"{n}\" (have: {string.Join(", ", configs.Keys)})");
        active = names;
        foreach (var layer in AllLayers) layer.ActiveAdapters = names;
        string? first = names.FirstOrDefault();
        foreach (var m in modulesToSave.Values)
        {
            string? adapter = names.FirstOrDefault(n => m.Adapters.Contains(n));
            m.Activate(adapter, adapter is not null && trainable[adapter]);
        }
        UpdateRequiresGrad();
    }

    /// <summary>Marks an adapter trainable or frozen (PEFT's is_trainable / inference mode).</summary>
    public void SetTrainable(string name, bool value)
    {
        trainable[name] = value;
        UpdateRequiresGrad();
    }

    void UpdateRequiresGrad()
    {
        foreach (var (_, param, adapter) in AdapterParameters())
            param.requires_grad = active.Contains(adapter) && trainable[adapter];
        foreach (var (name, config) in configs)
        {
            bool on = active.Contains(name) && trainable[name];
            if (config.Bias == "all")
                foreach (var (n, p) in Root.named_parameters()) { if (n.EndsWith(".bias") && !IsAdapterPath(n)) p.requires_grad |= on; }
            else if (config.Bias == "lora_only")
                foreach (var layer in linears.Values) if (layer.Adapters.ContainsKey(name) && layer.Host.bias is Parameter b) b.requires_grad |= on;
        }
    }

    /// <summary>Every LoRA parameter with our parameter name and its adapter.</summary>
    public IEnumerable<(string Name, Parameter Param, string Adapter)> AdapterParameters()
    {
        foreach (var (path, layer) in linears)
            foreach (var adapter in layer.Adapters.Keys)
            {
                yield return ($"{path}.lora_A.{adapter}.weight", layer.A(adapter).weight, adapter);
                yield return ($"{path}.lora_B.{adapter}.weight", layer.B(adapter).weight, adapter);
                if (layer.B(adapter).bias is Parameter bias) yield return ($"{path}.lora_B.{adapter}.bias", bias, adapter);
                if (layer.Magnitude(adapter) is Parameter m) yield return ($"{path}.lora_magnitude_vector.{adapter}.weight", m, adapter);
            }
        foreach (var (path, layer) in embeddings)
            foreach (var adapter in layer.Adapters.Keys)
            {
                yield return ($"{path}.lora_embedding_A.{adapter}", layer.A(adapter), adapter);
                yield return ($"{path}.lora_embedding_B.{adapter}", layer.B(adapter), adapter);
            }
    }

    internal IReadOnlyDictionary<string, ModulesToSave> ModulesToSaveByPath => modulesToSave;

    /// <summary>Parameters that training updates, by name (requires_grad = true).</summary>
    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters() =>
        Root.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();

    /// <summary>
    /// Trainable and total parameter counts as PEFT's <c>get_nb_trainable_parameters</c>: the base model plus every
    /// adapter's parameters and every modules_to_save copy; tied weights once.
    /// </summary>
    public (long Trainable, long All) CountParameters()
    {
        long all = Root.parameters().Sum(Quantization.QuantizedModels.PeftParameterCount); // a 4-bit weight counts numel × 2, as PEFT
        long train = Root.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        foreach (var m in modulesToSave.Values) all += m.CopySize * m.Adapters.Count();
        return (train, all);
    }

    /// <summary>PEFT's <c>print_trainable_parameters</c> line.</summary>
    public string ParameterReport()
    {
        var (t, a) = CountParameters();
        return FormatReport(t, a);
    }

    /// <summary>PEFT's print_trainable_parameters line (see <see cref="PeftModel.FormatReport"/>).</summary>
    public static string FormatReport(long trainable, long all) => PeftModel.FormatReport(trainable, all);

    /// <summary>While the returned scope lives, layers compute the base model only (PEFT's disable_adapter()).</summary>
    public IDisposable DisableAdapters()
    {
        SetDisabled(true);
        return new OnDispose(() => SetDisabled(false));
    }

    void SetDisabled(bool value)
    {
        foreach (var l in AllLayers) l.Disabled = value;
        foreach (var m in modulesToSave.Values)
        {
            string? adapter = value ? null : active.FirstOrDefault(n => m.Adapters.Contains(n));
            m.Activate(adapter, adapter is not null && trainable[adapter]);
        }
    }

    /// <summary>
    /// Per-row adapter selection inside one batch (PEFT's <c>adapter_names</c>): row i uses adapter names[i],
    /// "__base__" for none. Applies to forwards made while the returned scope lives.
    /// </summary>
    public IDisposable UseRowAdapters(IReadOnlyList<string> names)
    {
        foreach (var n in names)
            if (n != "__base__" && !configs.ContainsKey(n)) throw new PeftSharpException($"adapter_names: no adapter named \"{n}\"");
        if (modulesToSave.Count > 0) throw new PeftSharpException("adapter_names is not supported with modules_to_save");
        foreach (var l in AllLayers) l.RowAdapters = names;
        return new OnDispose(() =>
        {
            foreach (var l in AllLayers) l.RowAdapters = null;
        });
    }

    /// <summary>Folds the given (default: active) adapters into the base weights; safe refuses non-finite results.</summary>
    public void Merge(IEnumerable<string>? adapters = null, bool safe = false)
    {
        var names = (adapters ?? active).ToList();
        foreach (var l in AllLayers) l.Merge(names, safe);
    }

    /// <inheritdoc/>
    public void Unmerge()
    {
        foreach (var l in AllLayers) l.Unmerge();
    }

    /// <summary>
    /// Merges the active adapters and removes every LoRA layer: the result is the plain model with
    /// W ← W + ΔW (PEFT's merge_and_unload). modules_to_save keep the active adapter's copy.
    /// </summary>
    public nn.Module MergeAndUnload(bool safe = false, IEnumerable<string>? adapters = null)
    {
        Merge(adapters, safe);
        return Unload();
    }

    /// <summary>Removes every LoRA layer without merging (PEFT's unload()); merged adapters stay folded in.</summary>
    public nn.Module Unload()
    {
        foreach (var l in AllLayers) l.Detach();
        linears.Clear();
        embeddings.Clear();
        modulesToSave.Clear();
        configs.Clear();
        foreach (var p in Root.parameters()) p.requires_grad = false;
        return Root;
    }

    /// <inheritdoc/>
    public void DeleteAdapter(string name)
    {
        if (!configs.Remove(name)) throw new PeftSharpException($"no adapter named \"{name}\"");
        foreach (var l in AllLayers) if (l.Adapters.ContainsKey(name)) l.DeleteAdapter(name);
        foreach (var m in modulesToSave.Values) m.RemoveAdapter(name);
        trainable.Remove(name);
        SetAdapter(active.Where(a => a != name).ToArray());
    }
}
