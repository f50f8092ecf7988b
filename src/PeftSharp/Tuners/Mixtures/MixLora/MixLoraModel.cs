using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Mixtures.MixLora;

/// <summary>
/// A model with MixLoRA adapters: per block, a <see cref="MixLoraMoe"/> on the feed-forward network and a
/// <see cref="MixLoraAttentionLora"/> on each targeted attention projection. One MixLoRA adapter can be active at a
/// time (each recomputes the whole MLP). Files use the reference code's layout (<see cref="MixLoraFiles"/>).
/// </summary>
public sealed class MixLoraModel : MixtureTunerModel<MixLoraConfig>
{
    static readonly MixLoraTuner TunerInstance = new();

    MixLoraModel(CausalLM model) : base(model) { }

    /// <summary>A MixLoRA model on <paramref name="model"/> with no adapter yet (the base model is frozen).</summary>
    public static MixLoraModel Attach(CausalLM model) => new(model);

    /// <summary>Freezes the base model and adds one trainable, active adapter.</summary>
    public static MixLoraModel Create(CausalLM model, MixLoraConfig config, string adapterName = AdapterFiles.DefaultAdapter, long? seed = null)
    {
        var m = new MixLoraModel(model);
        m.AddAdapter(adapterName, config, seed, trainable: true);
        m.SetAdapter(adapterName);
        return m;
    }

    /// <inheritdoc/>
    public override ITuner Tuner => TunerInstance;
    /// <inheritdoc/>
    protected override string MethodName => "mixlora";
    /// <inheritdoc/>
    protected override int MaxActive => 1;
    /// <inheritdoc/>
    protected override MixLoraConfig ReadConfig(string dir) => MixLoraConfig.Load(dir);
    /// <inheritdoc/>
    protected override string SizeOf(MixLoraConfig config) => $"{config.NumExperts}e top-{config.TopK} r{config.ExpertR}";

    /// <summary>The mixtures of an adapter, by block index.</summary>
    public IReadOnlyList<MixLoraMoe> MixturesOf(string adapter) => ComponentsOf(adapter).OfType<MixLoraMoe>().OrderBy(m => m.Layer).ToList();

    /// <summary>The attention and feed-forward projection names of this model type.</summary>
    public static (string[] Attention, string[] FeedForward) ProjectionNames(ModelConfig config) => config.IsGpt2
        ? (["c_attn", "c_proj"], ["c_fc", "c_proj"])
        : (["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "up_proj", "down_proj"]);

    static IEnumerable<(string Name, Linear Layer)> AttentionProjections(DecoderBlock block) => block switch
    {
        Gpt2Block g => [("c_attn", g.attn.c_attn), ("c_proj", g.attn.c_proj)],
        LlamaDecoderLayer l => [("q_proj", l.self_attn.q_proj), ("k_proj", l.self_attn.k_proj), ("v_proj", l.self_attn.v_proj), ("o_proj", l.self_attn.o_proj)],
        _ => throw new PeftSharpException($"MixLoRA: blocks of type {block.GetType().Name} are not supported"),
    };

    /// <summary>The module path of every decoder block.</summary>
    static Dictionary<DecoderBlock, string> BlockPaths(CausalLM model) =>
        model.named_modules().Where(m => m.module is DecoderBlock).ToDictionary(m => (DecoderBlock)m.module, m => m.name);

    /// <inheritdoc/>
    protected override List<IMixtureComponent> Build(string name, MixLoraConfig config, Generator? generator)
    {
        config.Normalize();
        var (attention, feedForward) = ProjectionNames(Model.Config);
        var targets = (config.TargetModules?.Names ?? [.. attention, .. feedForward.Where(f => !attention.Contains(f))]).ToHashSet(StringComparer.Ordinal);
        if (config.TargetModules is null) config.TargetModules = TargetModules.FromNames(targets.Order(StringComparer.Ordinal));
        var known = attention.Concat(feedForward).ToHashSet(StringComparer.Ordinal);
        var unknown = targets.Where(t => !known.Contains(t)).ToList();
        if (unknown.Count > 0)
            throw new PeftSharpException($"target_modules: \"{unknown[0]}\" is not a projection of this {Model.Config.ModelType} model (MixLoRA targets {string.Join(", ", known.Order(StringComparer.Ordinal))})");
        if (!feedForward.Any(targets.Contains))
            throw new PeftSharpException($"target_modules: names no feed-forward projection ({string.Join(", ", feedForward)}); MixLoRA's experts need at least one");
        var built = new List<IMixtureComponent>();
        try
        {
            var paths = BlockPaths(Model);
            foreach (var block in Model.Blocks)
            {
                string blockPath = paths[block];
                string attnName = block is Gpt2Block ? "attn" : "self_attn";
                foreach (var (proj, linear) in AttentionProjections(block))
                    if (targets.Contains(proj))
                        built.Add(new MixLoraAttentionLora(linear, $"{blockPath}.{attnName}.{proj}", name, config, generator));
                built.Add(new MixLoraMoe(Model, block, blockPath, name, config, targets, Log, generator));
            }
        }
        catch
        {
            foreach (var c in built) c.Detach();
            throw;
        }
        return built;
    }

    /// <summary>
    /// The adapter's tensors under the reference code's keys (docs/mixtures.md):
    /// <c>mixlora.layers.{i}.self_attn.{proj}.lora_A.weight</c> / <c>lora_B.weight</c>,
    /// <c>mixlora.layers.{i}.mlp.moe_gate.weight</c>, and
    /// <c>mixlora.layers.{i}.mlp.{proj}.experts.{e}.lora_A.weight</c> / <c>lora_B.weight</c> (views of the live parameters).
    /// </summary>
    public override SortedDictionary<string, Tensor> StateDict(string adapter)
    {
        var result = new SortedDictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var c in ComponentsOf(adapter))
        {
            switch (c)
            {
                case MixLoraAttentionLora a:
                {
                    int layer = LayerOf(a.Host);
                    string proj = ProjName(a.Host, layer);
                    result[$"{MixLoraFiles.KeyPrefix}{layer}.self_attn.{proj}.lora_A.weight"] = a.Lora.lora_A[0];
                    result[$"{MixLoraFiles.KeyPrefix}{layer}.self_attn.{proj}.lora_B.weight"] = a.Lora.lora_B[0];
                    break;
                }
                case MixLoraMoe m:
                {
                    string prefix = $"{MixLoraFiles.KeyPrefix}{m.Layer}.mlp";
                    result[$"{prefix}.moe_gate.weight"] = m.moe_gate.weight;
                    foreach (var proj in m.ExpertProjections)
                    {
                        var ex = m.experts[proj];
                        for (int e = 0; e < ex.Experts; e++)
                        {
                            result[$"{prefix}.{proj}.experts.{e}.lora_A.weight"] = ex.lora_A[e];
                            result[$"{prefix}.{proj}.experts.{e}.lora_B.weight"] = ex.lora_B[e];
                        }
                    }
                    break;
                }
            }
        }
        return result;
    }

    int LayerOf(Linear host)
    {
        foreach (var block in Model.Blocks)
            if (AttentionProjections(block).Any(p => ReferenceEquals(p.Layer, host))) return block.Index;
        throw new PeftSharpException("MixLoRA: attention LoRA on a layer outside the blocks");
    }

    string ProjName(Linear host, int layer) => AttentionProjections(Model.Blocks[layer]).First(p => ReferenceEquals(p.Layer, host)).Name;

    /// <summary>
    /// The load-balancing loss of the routing recorded since the last <see cref="RoutingLog.Clear"/>, times the active
    /// adapter's router_aux_loss_coef; null when router_loss is off or nothing was recorded.
    /// </summary>
    public Tensor? WeightedAuxiliaryLoss()
    {
        if (ActiveAdapters.Count == 0) return null;
        var config = Configs[ActiveAdapters[0]];
        if (!config.RouterLoss || config.RouterAuxLossCoef == 0) return null;
        var loss = Log.AuxiliaryLoss();
        if (loss is null) return null;
        using (loss) return loss.mul(config.RouterAuxLossCoef);
    }
}
