using PeftSharp.Peft;

namespace PeftSharp.Tuners.IA3;

/// <summary>
/// PEFT's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING and TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
/// (utils/constants.py), for the model types PeftSharp runs and their close relatives.
/// </summary>
public static class IA3Defaults
{
    static readonly Dictionary<string, (string[] Targets, string[] Feedforward)> Mapping = new(StringComparer.Ordinal)
    {
        ["gpt2"] = (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
        ["gpt_bigcode"] = (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
        ["llama"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["llama4"] = (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["mistral"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["qwen2"] = (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["qwen3"] = (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["gemma"] = (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["gemma2"] = (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["phi"] = (["q_proj", "v_proj", "fc2"], ["fc2"]),
        ["opt"] = (["q_proj", "k_proj", "fc2"], ["fc2"]),
        ["gpt_neox"] = (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    };

    /// <summary>Model types that have default (IA)³ target and feed-forward modules.</summary>
    public static IReadOnlyCollection<string> KnownModelTypes => Mapping.Keys;

    /// <summary>Fills target_modules and feedforward_modules that are unset, as PEFT's _prepare_adapter_config.</summary>
    public static void ApplyTo(IA3Config config, string? modelType)
    {
        if (config.TargetModules is null)
            config.TargetModules = modelType is not null && Mapping.TryGetValue(modelType, out var m)
                ? TargetModules.FromNames(m.Targets)
                : throw new PeftSharpException($"target_modules: no (IA)³ default for model_type \"{modelType ?? "(custom module)"}\"; give target_modules");
        if (config.FeedforwardModules is null)
        {
            if (modelType is null || !Mapping.TryGetValue(modelType, out var m))
                throw new PeftSharpException($"feedforward_modules: no (IA)³ default for model_type \"{modelType ?? "(custom module)"}\"; give feedforward_modules");
            // Only defaults that are targets: PEFT fills in the full default list, which makes a saved config with custom
            // target_modules fail PEFT's own subset check when it is loaded again.
            var ff = config.TargetModules.Names is { } targets ? m.Feedforward.Where(f => targets.Contains(f, StringComparer.Ordinal)) : m.Feedforward;
            config.FeedforwardModules = TargetModules.FromNames(ff);
        }
    }
}
