using PeftSharp.Models;
using PeftSharp.Peft;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Mixtures;

/// <summary>
/// Which linear layers the dense mixtures (MoLoRA, MoV) adapt: target_modules matched with PEFT's rules, and by default
/// the keys, values and feed-forward output of every block, as Zadouri et al. (and PEFT's (IA)³ defaults) choose.
/// </summary>
public static class DenseMixtureTargets
{
    static readonly Dictionary<string, (string[] Targets, string[] Feedforward)> Defaults = new(StringComparer.Ordinal)
    {
        ["gpt2"] = (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
        ["llama"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["mistral"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["qwen2"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    };

    /// <summary>The default target modules of a model type.</summary>
    public static TargetModules DefaultTargets(string? modelType) =>
        modelType is not null && Defaults.TryGetValue(modelType, out var d) ? TargetModules.FromNames(d.Targets)
            : throw new PeftSharpException($"target_modules: no default for model_type \"{modelType}\"; give target_modules");

    /// <summary>The default feed-forward modules (MoV scales their input) of a model type.</summary>
    public static TargetModules DefaultFeedforward(string? modelType) =>
        modelType is not null && Defaults.TryGetValue(modelType, out var d) ? TargetModules.FromNames(d.Feedforward) : TargetModules.FromNames([]);

    /// <summary>The linear layers matched by target_modules, by module path; a one-line error when none match.</summary>
    public static List<(string Path, Linear Layer)> Find(CausalLM model, TargetModules targets, string method)
    {
        var candidates = model.Extensions.TunableLayers().ToList();
        if (targets.IsAllLinear)
            targets = ModuleMatcher.ExpandAllLinear(candidates.Where(c => c.Layer is Linear).Select(c => c.Path), ["lm_head"]);
        var found = new List<(string, Linear)>();
        foreach (var (path, layer) in candidates)
        {
            if (ModuleMatcher.Match(targets, null, null, path) != ModuleMatch.Targeted) continue;
            if (layer is not Linear linear) throw new PeftSharpException($"target_modules: \"{path}\" is an embedding; {method} adapts linear layers only");
            found.Add((path, linear));
        }
        if (found.Count == 0)
        {
            var names = candidates.Select(c => c.Path.Split('.')[^1]).Distinct().Order(StringComparer.Ordinal);
            throw new PeftSharpException($"target_modules {targets} matched no layer of this {model.Config.ModelType} model; its layers are named: {string.Join(", ", names)}");
        }
        return found;
    }

    /// <summary>PEFT's (IA)³ feed-forward test: a regex full match, or a path ending with a listed name.</summary>
    public static bool IsFeedforward(TargetModules? feedforward, string path) =>
        feedforward is not null && (feedforward.Regex is not null
            ? ModuleMatcher.FullMatchField("feedforward_modules", feedforward.Regex, path)
            : feedforward.Names!.Any(n => path.EndsWith(n, StringComparison.Ordinal)));
}
