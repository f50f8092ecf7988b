using System.Text.Json.Nodes;

using PeftSharp.Peft;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// PEFT's LoRA sub-configurations (LoftQConfig, EvaConfig, CordaConfig, LoraGAConfig, VeloraConfig, KasaConfig,
/// MontecloraConfig, BdLoraConfig, ArrowConfig) with their defaults, as the JSON objects PEFT writes for them.
/// PeftSharp does not implement these methods; it keeps their settings so that configs round-trip.
/// </summary>
public static class LoraSubConfigs
{
    /// <summary>LoftQConfig(): loftq_bits 4, loftq_iter 1.</summary>
    public static JsonObject LoftQ() => new() { ["loftq_bits"] = 4, ["loftq_iter"] = 1 };

    /// <summary>EvaConfig(): rho 2.0, tau 0.99, use_label_mask true, label_mask_value -100, whiten false, adjust_scaling_factors true.</summary>
    public static JsonObject Eva() => new()
    {
        ["rho"] = 2.0, ["tau"] = 0.99, ["use_label_mask"] = true, ["label_mask_value"] = -100,
        ["whiten"] = false, ["adjust_scaling_factors"] = true,
    };

    /// <summary>CordaConfig(): no cache or covariance file, corda_method "ipm", prune_temporary_fields true.</summary>
    public static JsonObject Corda() => new()
    {
        ["cache_file"] = null, ["covariance_file"] = null, ["corda_method"] = "ipm", ["verbose"] = false,
        ["use_float16_for_covariance"] = false, ["prune_temporary_fields"] = true,
    };

    /// <summary>LoraGAConfig(): direction "ArB2r", scale "stable", stable_gamma 16.</summary>
    public static JsonObject LoraGa() => new() { ["direction"] = "ArB2r", ["scale"] = "stable", ["stable_gamma"] = 16 };

    /// <summary>VeloraConfig(): num_groups 64, scale 1.0, init_type "batch_average".</summary>
    public static JsonObject Velora() => new() { ["num_groups"] = 64, ["scale"] = 1.0, ["init_type"] = "batch_average" };

    /// <summary>KasaConfig(): beta 1e-4, gamma 1e-3.</summary>
    public static JsonObject Kasa() => new() { ["beta"] = 1e-4, ["gamma"] = 1e-3 };

    /// <summary>MontecloraConfig(): num_samples 8, use_entropy false, dirichlet_prior 0.1, sample_scaler 1e-4, kl_loss_weight 1e-5, buffer_size 150.</summary>
    public static JsonObject Monteclora() => new()
    {
        ["num_samples"] = 8, ["use_entropy"] = false, ["dirichlet_prior"] = 0.1, ["sample_scaler"] = 1e-4,
        ["kl_loss_weight"] = 1e-5, ["buffer_size"] = 150,
    };

    /// <summary>BdLoraConfig(): no block-diagonal targets, nblocks 1, match_strict true.</summary>
    public static JsonObject BdLora() => new()
    {
        ["target_modules_bd_a"] = null, ["target_modules_bd_b"] = null, ["nblocks"] = 1, ["match_strict"] = true,
    };

    /// <summary>ArrowConfig(): top_k 3, router_temperature 1.0, use_gks false, adapter name lists and rng_seed null.</summary>
    public static JsonObject Arrow() => new()
    {
        ["top_k"] = 3, ["router_temperature"] = 1.0, ["use_gks"] = false, ["task_adapter_names"] = null,
        ["gks_adapter_names"] = null, ["rng_seed"] = null,
    };

    /// <summary>A new object holding <paramref name="given"/>'s entries plus <paramref name="defaults"/>' for keys it lacks
    /// (what PEFT's <c>XConfig(**d)</c> followed by <c>asdict</c> writes).</summary>
    internal static JsonObject WithDefaults(JsonObject given, JsonObject defaults)
    {
        var result = new JsonObject();
        foreach (var (k, v) in defaults)
            result[k] = given.TryGetPropertyValue(k, out var g) ? g?.DeepClone() : v?.DeepClone();
        foreach (var (k, v) in given)
            if (!result.ContainsKey(k)) result[k] = v?.DeepClone();
        return result;
    }

    /// <summary>A number in a sub-config, or null when absent or not a number.</summary>
    internal static double? Number(JsonObject obj, string key)
    {
        if (obj.TryGetPropertyValue(key, out var n) && n is JsonValue v)
        {
            if (v.TryGetValue<System.Text.Json.JsonElement>(out var e))
                return e.ValueKind == System.Text.Json.JsonValueKind.Number ? e.GetDouble() : null;
            if (v.TryGetValue<int>(out var i)) return i;
            if (v.TryGetValue<long>(out var l)) return l;
            if (v.TryGetValue<double>(out var d)) return d;
        }
        return null;
    }

    /// <summary>A string in a sub-config, or null when absent or not a string.</summary>
    internal static string? String(JsonObject obj, string key)
    {
        if (obj.TryGetPropertyValue(key, out var n) && n is JsonValue v)
        {
            if (v.TryGetValue<System.Text.Json.JsonElement>(out var e))
                return e.ValueKind == System.Text.Json.JsonValueKind.String ? e.GetString() : null;
            if (v.TryGetValue<string>(out var s)) return s;
        }
        return null;
    }
}
