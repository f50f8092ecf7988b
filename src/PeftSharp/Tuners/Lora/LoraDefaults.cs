using System.Collections.ObjectModel;

using PeftSharp.Peft;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: the modules LoRA adapts when a config leaves
/// <c>target_modules</c> unset, by the Hugging Face <c>model_type</c> of the base model's config.json.
/// </summary>
public static class LoraDefaults
{
    private static readonly ReadOnlyDictionary<string, TargetModules> Mapping = new(
        new Dictionary<string, TargetModules>(StringComparer.Ordinal)
        {
            ["t5"] = Names("q", "v"),
            ["mt5"] = Names("q", "v"),
            ["bart"] = Names("q_proj", "v_proj"),
            ["gpt2"] = Names("c_attn"),
            ["bloom"] = Names("query_key_value"),
            ["blip-2"] = Names("q", "v", "q_proj", "v_proj"),
            ["opt"] = Names("q_proj", "v_proj"),
            ["gptj"] = Names("q_proj", "v_proj"),
            ["gpt_neox"] = Names("query_key_value"),
            ["gpt_neo"] = Names("q_proj", "v_proj"),
            ["bert"] = Names("query", "value"),
            ["roberta"] = Names("query", "value"),
            ["xlm-roberta"] = Names("query", "value"),
            ["electra"] = Names("query", "value"),
            ["deberta-v2"] = Names("query_proj", "value_proj"),
            ["deberta"] = Names("in_proj"),
            ["layoutlm"] = Names("query", "value"),
            ["llama"] = Names("q_proj", "v_proj"),
            ["llama4"] = Names("q_proj", "v_proj"),
            ["chatglm"] = Names("query_key_value"),
            ["gpt_bigcode"] = Names("c_attn"),
            ["mpt"] = Names("Wqkv"),
            ["RefinedWebModel"] = Names("query_key_value"),
            ["RefinedWeb"] = Names("query_key_value"),
            ["falcon"] = Names("query_key_value"),
            ["btlm"] = Names("c_proj", "c_attn"),
            ["codegen"] = Names("qkv_proj"),
            ["mistral"] = Names("q_proj", "v_proj"),
            ["mixtral"] = Names("q_proj", "v_proj"),
            ["stablelm"] = Names("q_proj", "v_proj"),
            ["phi"] = Names("q_proj", "v_proj", "fc1", "fc2"),
            ["gemma"] = Names("q_proj", "v_proj"),
            ["gemma2"] = Names("q_proj", "v_proj"),
            ["gemma3_text"] = Names("q_proj", "v_proj"),
            ["gemma4"] = TargetModules.FromRegex(@".*language_model\..*\.(q_proj|v_proj)"),
            ["qwen2"] = Names("q_proj", "v_proj"),
            ["qwen3"] = Names("q_proj", "v_proj"),
            ["nemotron_h"] = Names("q_proj", "k_proj", "v_proj", "o_proj"),
            ["rwkv"] = Names("key", "value", "receptance", "output"),
            ["rwkv7"] = Names("r_proj", "k_proj", "v_proj", "o_proj", "key", "value"),
        });

    private static TargetModules Names(params string[] names) => TargetModules.FromNames(names);

    /// <summary>The model types PEFT has a default for (case-sensitive, as in PEFT).</summary>
    public static IReadOnlyCollection<string> KnownModelTypes => Mapping.Keys;

    /// <summary>PEFT's default target modules for <paramref name="modelType"/>, or null when PEFT has none.</summary>
    public static TargetModules? TargetModulesFor(string modelType)
    {
        ArgumentNullException.ThrowIfNull(modelType);
        return Mapping.GetValueOrDefault(modelType);
    }

    /// <summary>
    /// PEFT's <c>LoraModel._prepare_adapter_config</c>: when <c>target_modules</c> is unset, fill in the model
    /// type's default; without one (and without <c>target_parameters</c>) that is an error.
    /// </summary>
    public static void ApplyTo(LoraConfig config, string modelType)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.TargetModules is not null) return;
        var defaults = TargetModulesFor(modelType);
        if (defaults is not null)
            config.TargetModules = defaults;
        else if (config.TargetParameters is not { Count: > 0 })
            throw new PeftSharpException(
                $"field 'target_modules' is not set and PEFT has no default for model_type \"{modelType}\"; set target_modules (or target_parameters) in the adapter config");
    }
}
