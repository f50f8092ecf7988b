using System.Globalization;
using System.Text;

namespace PeftSharp.Tests.Reference;

/// <summary>A tiny model folder written for a test, and exactly what was written into it.</summary>
public sealed class TinyCheckpoint
{
    /// <summary>The folder holding config.json and model.safetensors.</summary>
    public required string Directory { get; init; }
    public string ConfigPath => Path.Combine(Directory, "config.json");
    public string WeightsPath => Path.Combine(Directory, "model.safetensors");
    /// <summary>The exact text of config.json.</summary>
    public required string ConfigJson { get; init; }
    /// <summary>dtype of every tensor in model.safetensors.</summary>
    public required NaiveDType DType { get; init; }
    /// <summary>Every tensor in the file by its on-disk name, values as stored (already bf16-rounded for BF16).
    /// Includes GPT-2's attn.bias / attn.masked_bias buffers when they were written.</summary>
    public required Dictionary<string, float[]> Weights { get; init; }
    /// <summary>Shape of every tensor in <see cref="Weights"/> ([] for a scalar).</summary>
    public required Dictionary<string, int[]> Shapes { get; init; }
    /// <summary>Tensor names in the order they were laid out in the file.</summary>
    public required IReadOnlyList<string> TensorOrder { get; init; }
}

/// <summary>File-level choices for a tiny GPT-2 checkpoint.</summary>
public sealed record TinyGpt2Options
{
    public int Seed { get; init; }
    public NaiveDType DType { get; init; } = NaiveDType.F32;
    /// <summary>Standard deviation of the normal initialisation of matrices and biases (norm weights are 1 + N(0, std)).</summary>
    public double InitStd { get; init; } = 0.1;
    /// <summary>true: keys "transformer.wte.weight" etc. (GPT2LMHeadModel); false: "wte.weight" etc. (GPT2Model, as in the hub's gpt2).</summary>
    public bool TransformerPrefix { get; init; } = true;
    /// <summary>Also write the old causal-mask buffers h.{i}.attn.bias [1,1,P,P] (lower-triangular ones, in the checkpoint dtype).</summary>
    public bool IncludeAttnBiasBuffers { get; init; }
    /// <summary>Also write the old h.{i}.attn.masked_bias scalar (shape [], value −1e4).</summary>
    public bool IncludeMaskedBias { get; init; }
    /// <summary>bos/eos ids written to config.json; null → vocab_size − 1 (as GPT-2's 50256).</summary>
    public int? BosTokenId { get; init; }
    public int? EosTokenId { get; init; }
}

/// <summary>File-level choices for a tiny Llama/Mistral/Qwen2 checkpoint.</summary>
public sealed record TinyLlamaOptions
{
    public int Seed { get; init; }
    public NaiveDType DType { get; init; } = NaiveDType.F32;
    /// <summary>Standard deviation of the normal initialisation of matrices and biases (norm weights are 1 + N(0, std)).</summary>
    public double InitStd { get; init; } = 0.1;
    /// <summary>bos/eos ids written to config.json; null → llama/mistral 1 and 2, qwen2 vocab_size − 1 for both.</summary>
    public int? BosTokenId { get; init; }
    public int? EosTokenId { get; init; }
}

/// <summary>
/// Builders of tiny random HF-layout model folders (config.json + model.safetensors), independent of the library:
/// the config is written the way transformers' save_pretrained writes it (json.dumps(indent=2, sort_keys=True) with
/// Python float formatting) and the weights through <see cref="NaiveSafetensors"/>. Deterministic from the seed.
/// </summary>
public static class TinyCheckpoints
{
    /// <summary>A fresh empty folder under the system temp directory.</summary>
    public static string NewTempDirectory(string prefix = "peftsharp-tiny-")
    {
        string dir = Path.Combine(Path.GetTempPath(), prefix + Guid.NewGuid().ToString("N")[..12]);
        System.IO.Directory.CreateDirectory(dir);
        return dir;
    }

    // ================================================================= GPT-2

    /// <summary>Names and shapes of a GPT-2 checkpoint's tensors, in file order.</summary>
    public static List<(string Name, int[] Shape)> Gpt2Layout(NaiveGpt2Config config, TinyGpt2Options? options = null)
    {
        options ??= new TinyGpt2Options();
        config.Validate();
        string pre = options.TransformerPrefix ? "transformer." : "";
        int e = config.NEmbd, inner = config.InnerDim, p = config.NPositions;
        var layout = new List<(string, int[])>
        {
            (pre + "wte.weight", [config.VocabSize, e]),
            (pre + "wpe.weight", [p, e]),
        };
        for (int l = 0; l < config.NLayer; l++)
        {
            string h = $"{pre}h.{l}.";
            layout.Add((h + "ln_1.weight", [e]));
            layout.Add((h + "ln_1.bias", [e]));
            if (options.IncludeAttnBiasBuffers) layout.Add((h + "attn.bias", [1, 1, p, p]));
            if (options.IncludeMaskedBias) layout.Add((h + "attn.masked_bias", []));
            layout.Add((h + "attn.c_attn.weight", [e, 3 * e]));
            layout.Add((h + "attn.c_attn.bias", [3 * e]));
            layout.Add((h + "attn.c_proj.weight", [e, e]));
            layout.Add((h + "attn.c_proj.bias", [e]));
            layout.Add((h + "ln_2.weight", [e]));
            layout.Add((h + "ln_2.bias", [e]));
            layout.Add((h + "mlp.c_fc.weight", [e, inner]));
            layout.Add((h + "mlp.c_fc.bias", [inner]));
            layout.Add((h + "mlp.c_proj.weight", [inner, e]));
            layout.Add((h + "mlp.c_proj.bias", [e]));
        }
        layout.Add((pre + "ln_f.weight", [e]));
        layout.Add((pre + "ln_f.bias", [e]));
        return layout;
    }

    /// <summary>
    /// Random GPT-2 weights (float32, not yet bf16-rounded): N(0, InitStd) for matrices and biases, 1 + N(0, InitStd)
    /// for LayerNorm weights; buffers (if requested) get their fixed values.
    /// </summary>
    public static Dictionary<string, float[]> RandomGpt2Weights(NaiveGpt2Config config, TinyGpt2Options? options = null)
    {
        options ??= new TinyGpt2Options();
        var rng = new Random(options.Seed);
        var weights = new Dictionary<string, float[]>();
        foreach (var (name, shape) in Gpt2Layout(config, options))
        {
            int n = shape.Aggregate(1, (a, d) => a * d);
            if (name.EndsWith("attn.bias", StringComparison.Ordinal) && shape.Length == 4)
            {
                int p = shape[2];
                var mask = new float[n];
                for (int i = 0; i < p; i++)
                    for (int j = 0; j <= i; j++)
                        mask[i * p + j] = 1f;
                weights[name] = mask;
            }
            else if (name.EndsWith("attn.masked_bias", StringComparison.Ordinal))
                weights[name] = [-1e4f];
            else if (name.Contains("ln_", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal))
                weights[name] = Normal(rng, n, 1.0, options.InitStd);
            else
                weights[name] = Normal(rng, n, 0.0, options.InitStd);
        }
        return weights;
    }

    /// <summary>Writes a random tiny GPT-2 into <paramref name="directory"/> (created if needed).</summary>
    public static TinyCheckpoint WriteGpt2(string directory, NaiveGpt2Config config, TinyGpt2Options? options = null)
    {
        options ??= new TinyGpt2Options();
        return WriteGpt2(directory, config, RandomGpt2Weights(config, options), options);
    }

    /// <summary>
    /// Writes the given GPT-2 weights (names must match <see cref="Gpt2Layout"/> for these options; values are rounded
    /// through bf16 when DType is BF16) plus config.json.
    /// </summary>
    public static TinyCheckpoint WriteGpt2(string directory, NaiveGpt2Config config, IReadOnlyDictionary<string, float[]> weights,
        TinyGpt2Options? options = null)
    {
        options ??= new TinyGpt2Options();
        string json = Gpt2ConfigJson(config, options);
        return WriteFolder(directory, json, Gpt2Layout(config, options), weights, options.DType);
    }

    /// <summary>config.json text for a GPT-2 model, as GPT2Config.save_pretrained writes it.</summary>
    public static string Gpt2ConfigJson(NaiveGpt2Config config, TinyGpt2Options? options = null)
    {
        options ??= new TinyGpt2Options();
        config.Validate();
        var d = new Dictionary<string, object?>
        {
            ["activation_function"] = "gelu_new",
            ["architectures"] = new object[] { "GPT2LMHeadModel" },
            ["attn_pdrop"] = 0.1,
            ["bos_token_id"] = options.BosTokenId ?? config.VocabSize - 1,
            ["embd_pdrop"] = 0.1,
            ["eos_token_id"] = options.EosTokenId ?? config.VocabSize - 1,
            ["initializer_range"] = 0.02,
            ["layer_norm_epsilon"] = config.LayerNormEpsilon,
            ["model_type"] = "gpt2",
            ["n_ctx"] = config.NPositions,
            ["n_embd"] = config.NEmbd,
            ["n_head"] = config.NHead,
            ["n_inner"] = config.NInner,
            ["n_layer"] = config.NLayer,
            ["n_positions"] = config.NPositions,
            ["reorder_and_upcast_attn"] = false,
            ["resid_pdrop"] = 0.1,
            ["scale_attn_by_inverse_layer_idx"] = false,
            ["scale_attn_weights"] = true,
            ["summary_activation"] = null,
            ["summary_first_dropout"] = 0.1,
            ["summary_proj_to_labels"] = true,
            ["summary_type"] = "cls_index",
            ["summary_use_proj"] = true,
            ["tie_word_embeddings"] = true,
            ["torch_dtype"] = TorchDTypeName(options.DType),
            ["transformers_version"] = "4.46.0",
            ["use_cache"] = true,
            ["vocab_size"] = config.VocabSize,
        };
        return PythonJson.Dumps(d);
    }

    // ================================================================= Llama family

    /// <summary>Names and shapes of a Llama/Mistral/Qwen2 checkpoint's tensors, in file order.</summary>
    public static List<(string Name, int[] Shape)> LlamaLayout(NaiveLlamaConfig config)
    {
        config.Validate();
        int hs = config.HiddenSize, hd = config.EffectiveHeadDim, ff = config.IntermediateSize;
        int qDim = config.NumAttentionHeads * hd, kvDim = config.NumKeyValueHeads * hd;
        var layout = new List<(string, int[])> { ("model.embed_tokens.weight", [config.VocabSize, hs]) };
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            layout.Add((p + "input_layernorm.weight", [hs]));
            layout.Add((p + "self_attn.q_proj.weight", [qDim, hs]));
            if (config.HasQkvBias) layout.Add((p + "self_attn.q_proj.bias", [qDim]));
            layout.Add((p + "self_attn.k_proj.weight", [kvDim, hs]));
            if (config.HasQkvBias) layout.Add((p + "self_attn.k_proj.bias", [kvDim]));
            layout.Add((p + "self_attn.v_proj.weight", [kvDim, hs]));
            if (config.HasQkvBias) layout.Add((p + "self_attn.v_proj.bias", [kvDim]));
            layout.Add((p + "self_attn.o_proj.weight", [hs, qDim]));
            if (config.HasOProjBias) layout.Add((p + "self_attn.o_proj.bias", [hs]));
            layout.Add((p + "post_attention_layernorm.weight", [hs]));
            layout.Add((p + "mlp.gate_proj.weight", [ff, hs]));
            if (config.HasMlpBias) layout.Add((p + "mlp.gate_proj.bias", [ff]));
            layout.Add((p + "mlp.up_proj.weight", [ff, hs]));
            if (config.HasMlpBias) layout.Add((p + "mlp.up_proj.bias", [ff]));
            layout.Add((p + "mlp.down_proj.weight", [hs, ff]));
            if (config.HasMlpBias) layout.Add((p + "mlp.down_proj.bias", [hs]));
        }
        layout.Add(("model.norm.weight", [hs]));
        if (!config.TieWordEmbeddings) layout.Add(("lm_head.weight", [config.VocabSize, hs]));
        return layout;
    }

    /// <summary>Random Llama-family weights (float32, not yet bf16-rounded): N(0, InitStd), RMSNorm weights 1 + N(0, InitStd).</summary>
    public static Dictionary<string, float[]> RandomLlamaWeights(NaiveLlamaConfig config, TinyLlamaOptions? options = null)
    {
        options ??= new TinyLlamaOptions();
        var rng = new Random(options.Seed);
        var weights = new Dictionary<string, float[]>();
        foreach (var (name, shape) in LlamaLayout(config))
        {
            int n = shape.Aggregate(1, (a, d) => a * d);
            bool isNorm = name.EndsWith("layernorm.weight", StringComparison.Ordinal) || name == "model.norm.weight";
            weights[name] = Normal(rng, n, isNorm ? 1.0 : 0.0, options.InitStd);
        }
        return weights;
    }

    /// <summary>Writes a random tiny Llama/Mistral/Qwen2 into <paramref name="directory"/> (created if needed).</summary>
    public static TinyCheckpoint WriteLlama(string directory, NaiveLlamaConfig config, TinyLlamaOptions? options = null)
    {
        options ??= new TinyLlamaOptions();
        return WriteLlama(directory, config, RandomLlamaWeights(config, options), options);
    }

    /// <summary>Writes the given Llama-family weights (names must match <see cref="LlamaLayout"/>) plus config.json.</summary>
    public static TinyCheckpoint WriteLlama(string directory, NaiveLlamaConfig config, IReadOnlyDictionary<string, float[]> weights,
        TinyLlamaOptions? options = null)
    {
        options ??= new TinyLlamaOptions();
        return WriteFolder(directory, LlamaConfigJson(config, options), LlamaLayout(config), weights, options.DType);
    }

    /// <summary>config.json text for a Llama / Mistral / Qwen2 model, as the matching HF config class writes it.</summary>
    public static string LlamaConfigJson(NaiveLlamaConfig config, TinyLlamaOptions? options = null)
    {
        options ??= new TinyLlamaOptions();
        config.Validate();
        bool qwen = config.ModelType == "qwen2";
        string arch = config.ModelType switch
        {
            "llama" => "LlamaForCausalLM",
            "mistral" => "MistralForCausalLM",
            _ => "Qwen2ForCausalLM",
        };
        var d = new Dictionary<string, object?>
        {
            ["architectures"] = new object[] { arch },
            ["attention_dropout"] = 0.0,
            ["bos_token_id"] = options.BosTokenId ?? (qwen ? config.VocabSize - 1 : 1),
            ["eos_token_id"] = options.EosTokenId ?? (qwen ? config.VocabSize - 1 : 2),
            ["hidden_act"] = "silu",
            ["hidden_size"] = config.HiddenSize,
            ["initializer_range"] = 0.02,
            ["intermediate_size"] = config.IntermediateSize,
            ["max_position_embeddings"] = config.MaxPositionEmbeddings,
            ["model_type"] = config.ModelType,
            ["num_attention_heads"] = config.NumAttentionHeads,
            ["num_hidden_layers"] = config.NumHiddenLayers,
            ["num_key_value_heads"] = config.NumKeyValueHeads,
            ["rms_norm_eps"] = config.RmsNormEps,
            ["rope_theta"] = config.RopeTheta,
            ["tie_word_embeddings"] = config.TieWordEmbeddings,
            ["torch_dtype"] = TorchDTypeName(options.DType),
            ["transformers_version"] = "4.46.0",
            ["use_cache"] = true,
            ["vocab_size"] = config.VocabSize,
        };
        if (config.HeadDim is int headDim) d["head_dim"] = headDim;
        if (config.RopeScaling is { } rs)
        {
            d["rope_scaling"] = new Dictionary<string, object?>
            {
                ["factor"] = rs.Factor,
                ["high_freq_factor"] = rs.HighFreqFactor,
                ["low_freq_factor"] = rs.LowFreqFactor,
                ["original_max_position_embeddings"] = rs.OriginalMaxPositionEmbeddings,
                ["rope_type"] = "llama3",
            };
        }
        else if (config.ModelType != "mistral")
            d["rope_scaling"] = null;
        switch (config.ModelType)
        {
            case "llama":
                d["attention_bias"] = config.AttentionBias;
                d["mlp_bias"] = config.MlpBias;
                d["pretraining_tp"] = 1;
                break;
            case "mistral":
                d["sliding_window"] = null;
                break;
            case "qwen2":
                d["max_window_layers"] = config.NumHiddenLayers;
                d["sliding_window"] = config.MaxPositionEmbeddings;
                d["use_sliding_window"] = false;
                break;
        }
        return PythonJson.Dumps(d);
    }

    // ================================================================= shared

    private static string TorchDTypeName(NaiveDType dtype) => dtype == NaiveDType.BF16 ? "bfloat16" : "float32";

    private static TinyCheckpoint WriteFolder(string directory, string configJson, List<(string Name, int[] Shape)> layout,
        IReadOnlyDictionary<string, float[]> weights, NaiveDType dtype)
    {
        var expected = layout.Select(x => x.Name).ToHashSet();
        var extra = weights.Keys.Where(k => !expected.Contains(k)).ToList();
        if (extra.Count > 0)
            throw new ArgumentException("weights not in this layout: " + string.Join(", ", extra));

        var stored = new Dictionary<string, float[]>();
        var shapes = new Dictionary<string, int[]>();
        var tensors = new List<NaiveTensor>();
        foreach (var (name, shape) in layout)
        {
            if (!weights.TryGetValue(name, out var values))
                throw new ArgumentException($"missing weight '{name}'");
            int n = shape.Aggregate(1, (a, d) => a * d);
            if (values.Length != n)
                throw new ArgumentException($"weight '{name}' has {values.Length} values, shape [{string.Join(",", shape)}] needs {n}");
            float[] onDisk = dtype == NaiveDType.BF16 ? NaiveSafetensors.RoundToBf16(values) : (float[])values.Clone();
            stored[name] = onDisk;
            shapes[name] = (int[])shape.Clone();
            tensors.Add(new NaiveTensor(name, dtype, shape, onDisk));
        }

        System.IO.Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "config.json"), configJson, new UTF8Encoding(false));
        NaiveSafetensors.Write(Path.Combine(directory, "model.safetensors"), tensors);
        return new TinyCheckpoint
        {
            Directory = directory,
            ConfigJson = configJson,
            DType = dtype,
            Weights = stored,
            Shapes = shapes,
            TensorOrder = layout.Select(x => x.Name).ToList(),
        };
    }

    /// <summary>n samples of N(mean, std) from <paramref name="rng"/> (Box–Muller), as float32.</summary>
    private static float[] Normal(Random rng, int n, double mean, double std)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1.0 - rng.NextDouble(); // (0, 1]
            double u2 = rng.NextDouble();
            double z = Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
            x[i] = (float)(mean + std * z);
        }
        return x;
    }
}

/// <summary>
/// The subset of Python's json.dumps(obj, indent=2, sort_keys=True) that HF config files need: dictionaries
/// (keys sorted by code point), lists, strings, ints, floats in Python repr form (1e-05, 10000.0), booleans, null.
/// HF's save_pretrained appends a trailing newline.
/// </summary>
public static class PythonJson
{
    public static string Dumps(object? value)
    {
        var sb = new StringBuilder();
        Write(sb, value, 0);
        sb.Append('\n');
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? value, int indent)
    {
        switch (value)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case string s: sb.Append(Quote(s)); break;
            case int i: sb.Append(i.ToString(CultureInfo.InvariantCulture)); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(FloatRepr(d)); break;
            case float f: sb.Append(FloatRepr(f)); break;
            case IDictionary<string, object?> dict:
                if (dict.Count == 0) { sb.Append("{}"); break; }
                sb.Append("{\n");
                var keys = dict.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
                for (int k = 0; k < keys.Count; k++)
                {
                    sb.Append(' ', indent + 2).Append(Quote(keys[k])).Append(": ");
                    Write(sb, dict[keys[k]], indent + 2);
                    sb.Append(k + 1 < keys.Count ? ",\n" : "\n");
                }
                sb.Append(' ', indent).Append('}');
                break;
            case System.Collections.IEnumerable list:
                var items = list.Cast<object?>().ToList();
                if (items.Count == 0) { sb.Append("[]"); break; }
                sb.Append("[\n");
                for (int k = 0; k < items.Count; k++)
                {
                    sb.Append(' ', indent + 2);
                    Write(sb, items[k], indent + 2);
                    sb.Append(k + 1 < items.Count ? ",\n" : "\n");
                }
                sb.Append(' ', indent).Append(']');
                break;
            default:
                throw new NotSupportedException($"PythonJson: {value.GetType()}");
        }
    }

    private static string Quote(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in s)
        {
            if (c == '"') sb.Append("\\\"");
            else if (c == '\\') sb.Append("\\\\");
            else if (c == '\n') sb.Append("\\n");
            else if (c < 0x20 || c > 0x7E) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture)); // ensure_ascii
            else sb.Append(c);
        }
        return sb.Append('"').ToString();
    }

    /// <summary>Python's repr(float): shortest round-trip digits; scientific when x &lt; 1e-4 or x ≥ 1e16.</summary>
    public static string FloatRepr(double x)
    {
        if (double.IsNaN(x)) return "NaN";
        if (double.IsPositiveInfinity(x)) return "Infinity";
        if (double.IsNegativeInfinity(x)) return "-Infinity";
        if (x == 0) return BitConverter.DoubleToInt64Bits(x) < 0 ? "-0.0" : "0.0";

        string sign = x < 0 ? "-" : "";
        // Shortest round-trip digits and decimal exponent from .NET's "E16"-free "R" formatting.
        string r = Math.Abs(x).ToString("R", CultureInfo.InvariantCulture);
        int exp10 = 0;
        int ePos = r.IndexOfAny(['E', 'e']);
        if (ePos >= 0)
        {
            exp10 = int.Parse(r[(ePos + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            r = r[..ePos];
        }
        int dot = r.IndexOf('.');
        string intPart = dot >= 0 ? r[..dot] : r;
        string fracPart = dot >= 0 ? r[(dot + 1)..] : "";
        string digits = (intPart + fracPart).TrimStart('0');
        int leadingZerosRemoved = (intPart + fracPart).Length - digits.Length;
        // value = 0.<digits> × 10^decpt
        int decpt = intPart.Length - leadingZerosRemoved + exp10;
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";

        if (decpt > -4 && decpt <= 16)
        {
            if (decpt <= 0) return sign + "0." + new string('0', -decpt) + digits;
            if (decpt >= digits.Length) return sign + digits + new string('0', decpt - digits.Length) + ".0";
            return sign + digits[..decpt] + "." + digits[decpt..];
        }
        int e = decpt - 1;
        string mantissa = digits.Length == 1 ? digits : digits[0] + "." + digits[1..];
        return sign + mantissa + "e" + (e < 0 ? "-" : "+") + Math.Abs(e).ToString("00", CultureInfo.InvariantCulture);
    }
}
