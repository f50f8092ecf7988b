using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// AdapterHub's AdapterFusion configuration (<c>AdapterFusionConfig</c> and its presets "dynamic" =
/// <c>DynamicAdapterFusionConfig</c>, the default, and "static" = <c>StaticAdapterFusionConfig</c>), as saved under
/// <c>"config"</c> in adapter_fusion_config.json. See <see cref="FusionLayer"/> for what each field does.
/// </summary>
/// <param name="Key">a trainable key projection (hidden → hidden, with bias) applied to each adapter's output.</param>
/// <param name="Query">a trainable query projection (hidden → hidden, with bias) applied to the sub-layer output.</param>
/// <param name="Value">a trainable value projection (hidden → hidden, no bias).</param>
/// <param name="QueryBeforeLn">take the query before the residual is added (the sub-layer output itself).</param>
/// <param name="Regularization">add 0.01·Σ‖I − V‖² over layers to the training loss (keeps V near the identity).</param>
/// <param name="ResidualBefore">add the residual to every adapter output before fusing (else after).</param>
/// <param name="Temperature">start the softmax temperature at 50 and lower it by 0.05 per forward call down to 1.</param>
/// <param name="ValueBeforeSoftmax">project each adapter output by V before mixing (else the mixture after).</param>
/// <param name="ValueInitialized">start V at the identity with 1e-6 off the diagonal (else BERT's normal(0, 0.02)).</param>
/// <param name="DropoutProb">dropout on the attention scores; null: the model's attention_probs_dropout_prob (0 for GPT-2 and Llama).</param>
public sealed record AdapterFusionConfig(
    bool Key, bool Query, bool Value, bool QueryBeforeLn, bool Regularization, bool ResidualBefore,
    bool Temperature, bool ValueBeforeSoftmax, bool ValueInitialized, double? DropoutProb)
{
    /// <summary>AdapterHub's "dynamic" preset (the default): query, key and value, V regularised towards the identity.</summary>
    public static AdapterFusionConfig Dynamic() => new(true, true, true, false, true, false, false, true, true, null);

    /// <summary>AdapterHub's "static" preset: query and key only, no value projection.</summary>
    public static AdapterFusionConfig Static() => new(true, true, false, false, false, false, false, true, false, null);

    /// <summary>The preset named "dynamic" or "static".</summary>
    public static AdapterFusionConfig FromPresetName(string name) => name switch
    {
        "dynamic" => Dynamic(),
        "static" => Static(),
        _ => throw new PeftSharpException($"fusion type \"{name}\": expected dynamic or static"),
    };

    /// <summary>The config object as AdapterHub writes it (<c>asdict</c> of the dataclass: every field, plus <c>architecture</c>).</summary>
    public JsonObject ToJson() => new()
    {
        ["architecture"] = null,
        ["dropout_prob"] = DropoutProb is double d ? JsonValue.Create(d) : null,
        ["key"] = Key,
        ["query"] = Query,
        ["query_before_ln"] = QueryBeforeLn,
        ["regularization"] = Regularization,
        ["residual_before"] = ResidualBefore,
        ["temperature"] = Temperature,
        ["value"] = Value,
        ["value_before_softmax"] = ValueBeforeSoftmax,
        ["value_initialized"] = ValueInitialized,
    };

    /// <summary>Reads the <c>"config"</c> object of adapter_fusion_config.json; a missing field takes the "dynamic" preset's value.</summary>
    public static AdapterFusionConfig FromJson(JsonObject config, string source)
    {
        var d = Dynamic();
        bool Flag(string field, bool fallback)
        {
            var node = config[field];
            if (node is null) return fallback;
            if (node is JsonValue v)
            {
                switch (v.GetValueKind())
                {
                    case JsonValueKind.True: return true;
                    case JsonValueKind.False: return false;
                    // AdapterHub types value_initialized as str; a non-empty string is truthy in its `if` checks.
                    case JsonValueKind.String when field == "value_initialized": return v.GetValue<string>().Length > 0;
                }
            }
            throw new PeftSharpException($"{source}: field 'config.{field}' is {node.ToJsonString()}; expected true or false");
        }
        double? dropout = null;
        if (config["dropout_prob"] is JsonNode dn)
        {
            if (dn is not JsonValue dv || dv.GetValueKind() != JsonValueKind.Number)
                throw new PeftSharpException($"{source}: field 'config.dropout_prob' is {dn.ToJsonString()}; expected a number or null");
            dropout = dv.GetValue<JsonElement>().GetDouble();
            if (dropout is < 0 or >= 1) throw new PeftSharpException($"{source}: field 'config.dropout_prob' is {dropout}; expected a value in [0, 1)");
        }
        return new AdapterFusionConfig(
            Flag("key", d.Key), Flag("query", d.Query), Flag("value", d.Value), Flag("query_before_ln", d.QueryBeforeLn),
            Flag("regularization", d.Regularization), Flag("residual_before", d.ResidualBefore), Flag("temperature", d.Temperature),
            Flag("value_before_softmax", d.ValueBeforeSoftmax), Flag("value_initialized", d.ValueInitialized), dropout);
    }
}
