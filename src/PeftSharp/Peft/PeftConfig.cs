using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace PeftSharp.Peft;

/// <summary>
/// The part of an adapter_config.json that every PEFT method shares (PEFT's <c>PeftConfigMixin</c> and
/// <c>PeftConfig</c>), plus the machinery that reads and writes the file the way Python PEFT does.
/// </summary>
/// <remarks>
/// <para>A subclass declares its fields as public properties with <see cref="JsonPropertyNameAttribute"/>
/// (PEFT's field name) and PEFT's default as the initial value; reading, type checking and writing follow from the
/// property types. It overrides <see cref="PostInit"/> for what PEFT's <c>__post_init__</c> does.</para>
/// <para>Reading accepts unknown fields (from newer PEFT versions): they are kept in <see cref="ExtensionData"/>
/// and written back by <see cref="Save"/>. (Python PEFT drops them with a warning instead.)</para>
/// </remarks>
public abstract class PeftConfig
{
    /// <summary>PEFT's CONFIG_NAME.</summary>
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>
    /// The PEFT version whose adapter_config.json format PeftSharp matches, written as <c>peft_version</c> for new
    /// configs, in the form PEFT itself writes for a development install (<c>version@commit</c>).
    /// </summary>
    public const string MatchedPeftVersion = "0.20.1.dev0@5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40";

    private List<string> _warnings = [];
    private Dictionary<(string Field, string? Key), (double Value, bool IsFloat)>? _literals;

    /// <summary>Sets <see cref="PeftType"/>; called by each method's config class.</summary>
    protected PeftConfig(string peftType)
    {
        PeftType = peftType;
    }

    /// <summary>The PEFT method (<c>"LORA"</c>, <c>"ADALORA"</c>, ...); see <see cref="PeftTypes"/>.</summary>
    [JsonPropertyName("peft_type")]
    public string? PeftType { get; set; }

    /// <summary>The task (<c>"CAUSAL_LM"</c>, <c>"SEQ_CLS"</c>, ...) or null; see <see cref="TaskTypes"/>.</summary>
    [JsonPropertyName("task_type")]
    public string? TaskType { get; set; }

    /// <summary>Set by PEFT for custom (non-task) models: base model class name and library.</summary>
    [JsonPropertyName("auto_mapping")]
    public JsonObject? AutoMapping { get; set; }

    /// <summary>The PEFT version that wrote the config; new configs get <see cref="MatchedPeftVersion"/>.</summary>
    [JsonPropertyName("peft_version")]
    public string? PeftVersion { get; set; } = MatchedPeftVersion;

    /// <summary>The base model (hub id or path) the adapter was trained on.</summary>
    [JsonPropertyName("base_model_name_or_path")]
    public string? BaseModelNameOrPath { get; set; }

    /// <summary>The base model revision.</summary>
    [JsonPropertyName("revision")]
    public string? Revision { get; set; }

    /// <summary>Whether the adapter is loaded for inference only (PEFT's save_pretrained writes true).</summary>
    [JsonPropertyName("inference_mode")]
    public bool InferenceMode { get; set; }

    /// <summary>Fields of the file this version does not know, kept so that <see cref="Save"/> writes them back.</summary>
    [JsonExtensionData]
    public JsonObject ExtensionData { get; set; } = new();

    /// <summary>What PEFT would have warned about while reading or normalising this config.</summary>
    [JsonIgnore]
    public IReadOnlyList<string> Warnings => _warnings;

    /// <summary>The <c>peft_type</c> this config class is for (<c>"LORA"</c> for LoraConfig).</summary>
    [JsonIgnore]
    public abstract string ExpectedPeftType { get; }

    /// <summary>When true, <see cref="PostInit"/> keeps a <c>peft_type</c> other than <see cref="ExpectedPeftType"/>.</summary>
    [JsonIgnore]
    protected bool KeepsForeignPeftType { get; private set; }

    // ------------------------------------------------------------------ reading

    /// <summary>Reads only <c>peft_type</c> from <c>adapterDir/adapter_config.json</c>, to pick the config class.</summary>
    public static string ReadPeftType(string adapterDir)
    {
        string path = Path.Combine(adapterDir, ConfigFileName);
        var root = ParseFile(path);
        if (!root.TryGetProperty("peft_type", out var e) || e.ValueKind == JsonValueKind.Null)
            throw new PeftSharpException($"{path}: field 'peft_type' is missing");
        if (e.ValueKind != JsonValueKind.String)
            throw new FieldReadContext(path, "peft_type", null!).Error("a string", e);
        return e.GetString()!;
    }

    /// <summary>
    /// Reads <c>adapterDir/adapter_config.json</c> into a new <typeparamref name="T"/>. A <c>peft_type</c> other
    /// than <typeparamref name="T"/>'s is an error unless <paramref name="allowOtherPeftType"/> is true (then it is
    /// kept, so that e.g. a DyLoRA config can reuse the LoRA machinery).
    /// </summary>
    protected static T LoadFromDirectory<T>(string adapterDir, bool allowOtherPeftType) where T : PeftConfig, new()
    {
        ArgumentNullException.ThrowIfNull(adapterDir);
        string path = Path.Combine(adapterDir, ConfigFileName);
        var config = new T();
        config.ReadFrom(ParseFile(path), path, allowOtherPeftType);
        return config;
    }

    /// <summary>Reads a config from JSON text; <paramref name="sourceName"/> names it in error messages.</summary>
    protected static T ParseJson<T>(string json, string sourceName, bool allowOtherPeftType) where T : PeftConfig, new()
    {
        ArgumentNullException.ThrowIfNull(json);
        var config = new T();
        config.ReadFrom(ParseText(json, sourceName), sourceName, allowOtherPeftType);
        return config;
    }

    private static JsonElement ParseFile(string path)
    {
        if (Directory.Exists(path))
            throw new PeftSharpException($"{path}: is a directory, expected the adapter's {ConfigFileName} file");
        if (!File.Exists(path))
            throw new PeftSharpException($"{path}: file not found (expected an adapter folder holding {ConfigFileName})");
        string text;
        try
        {
            text = File.ReadAllText(path, Encoding.UTF8);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new PeftSharpException($"{path}: cannot be read ({OneLine(ex.Message)})", ex);
        }
        return ParseText(text, path);
    }

    private static JsonElement ParseText(string text, string source)
    {
        try
        {
            using var doc = JsonDocument.Parse(text, new JsonDocumentOptions { AllowTrailingCommas = false });
            var root = doc.RootElement.Clone();
            if (root.ValueKind != JsonValueKind.Object)
                throw new PeftSharpException($"{source}: expected a JSON object at the top level, got {FieldReadContext.Describe(root)}");
            return root;
        }
        catch (JsonException ex)
        {
            throw PeftSharp.IO.JsonErrors.Invalid(source, ex);
        }
    }

    private void ReadFrom(JsonElement root, string source, bool allowOtherPeftType)
    {
        // Python's json.load: for a repeated key the last value wins, at the first key's position.
        var props = new OrderedDictionary<string, JsonElement>(StringComparer.Ordinal);
        foreach (var p in root.EnumerateObject()) props[p.Name] = p.Value;

        if (props.Remove("runtime_config"))
            _warnings.Add("The configuration file contains a `runtime_config` key. This is ignored. Runtime configurations are only valid at runtime.");

        if (props.TryGetValue("peft_type", out var pt) && pt.ValueKind != JsonValueKind.Null)
        {
            if (pt.ValueKind != JsonValueKind.String)
                throw new FieldReadContext(source, "peft_type", this).Error("a string", pt);
            string found = pt.GetString()!;
            if (!string.Equals(found, ExpectedPeftType, StringComparison.Ordinal) && !allowOtherPeftType)
                throw new PeftSharpException(
                    $"{source}: field 'peft_type' is \"{found}\", but {GetType().Name} reads \"{ExpectedPeftType}\" adapters only");
        }

        foreach (var field in ConfigField.For(GetType()))
        {
            if (!props.TryGetValue(field.JsonName, out var e)) continue;
            props.Remove(field.JsonName);
            var ctx = new FieldReadContext(source, field.JsonName, this, field.Nullable);
            object? value;
            if (e.ValueKind == JsonValueKind.Null)
            {
                if (!field.Nullable) throw ctx.Error(field.Codec.Expected, e);
                value = null;
            }
            else
            {
                value = field.Codec.Read(e, ctx);
            }
            field.Property.SetValue(this, value);
        }

        ExtensionData = new JsonObject();
        foreach (var (name, e) in props)
        {
            ExtensionData[name] = JsonTree.FromElement(e);
            _warnings.Add($"Unexpected field '{name}' for {GetType().Name} is ignored (kept for writing back); the file was probably written by a newer PEFT version.");
        }

        KeepsForeignPeftType = allowOtherPeftType;
        RunPostInit(source);
    }

    // ------------------------------------------------------------------ post-init

    /// <summary>
    /// Applies what PEFT does when the config object is constructed (<c>__post_init__</c>): fills defaults derived
    /// from other fields and rejects invalid combinations. Called after reading and (on a copy) before writing;
    /// call it yourself to see the effect on a config built in code.
    /// </summary>
    /// <returns>The warnings PEFT would print.</returns>
    public IReadOnlyList<string> Normalize()
    {
        int before = _warnings.Count;
        RunPostInit(GetType().Name);
        return _warnings.Skip(before).ToList();
    }

    private void RunPostInit(string source)
    {
        try
        {
            PostInit(_warnings);
        }
        catch (PeftConfigException ex)
        {
            throw new PeftSharpException($"{source}: {ex.Message}");
        }
    }

    /// <summary>
    /// PEFT's <c>__post_init__</c>. Report an invalid value with <see cref="Invalid"/>; the message is prefixed
    /// with the file. The base checks <c>task_type</c> and fills <c>peft_version</c>.
    /// </summary>
    protected virtual void PostInit(List<string> warnings)
    {
        if (TaskType is not null && !TaskTypes.All.Contains(TaskType))
            throw Invalid("task_type", $"is \"{TaskType}\"; expected one of {string.Join(", ", TaskTypes.All)} or null");
        PeftVersion ??= MatchedPeftVersion;
        if (!KeepsForeignPeftType) PeftType = ExpectedPeftType;
    }

    /// <summary>An error about one field, raised from <see cref="PostInit"/>.</summary>
    protected static Exception Invalid(string field, string problem) => new PeftConfigException($"field '{field}' {problem}");

    /// <summary>An error about a combination of fields, raised from <see cref="PostInit"/>.</summary>
    protected static Exception InvalidCombination(string problem) => new PeftConfigException(problem);

    private sealed class PeftConfigException(string message) : Exception(message);

    // ------------------------------------------------------------------ writing

    /// <summary>
    /// The exact text PEFT's <c>save_pretrained</c> writes for this config:
    /// <c>json.dumps(to_dict(), indent=2, sort_keys=True)</c> after PEFT's post-init normalisation. List-valued
    /// <c>target_modules</c>/<c>exclude_modules</c> are sets in PEFT, written in arbitrary (hash) order; PeftSharp
    /// writes them sorted.
    /// </summary>
    public string ToJson() => ToJson(GetType().Name);

    private string ToJson(string source)
    {
        var copy = (PeftConfig)MemberwiseClone();
        copy._warnings = [];
        copy.RunPostInit(source);
        var obj = new JsonObject();
        foreach (var field in ConfigField.For(GetType()))
        {
            object? value = field.Property.GetValue(copy);
            if (value is double d && !double.IsFinite(d))
                throw new PeftSharpException($"{source}: field '{field.JsonName}' is {d}; expected a finite number");
            obj[field.JsonName] = value is null ? null : field.Codec.Write(value, copy, field.JsonName);
        }
        foreach (var (name, node) in copy.ExtensionData)
        {
            if (!obj.ContainsKey(name)) obj[name] = node?.DeepClone();
        }
        return PythonJson.Dumps(obj);
    }

    /// <summary>
    /// Writes <c>adapterDir/adapter_config.json</c> as PEFT's <c>save_pretrained</c> does (see <see cref="ToJson()"/>),
    /// creating the folder if needed. The file is replaced atomically: written to a temporary file in the same
    /// folder, flushed, then renamed over the old one.
    /// </summary>
    public void Save(string adapterDir)
    {
        ArgumentNullException.ThrowIfNull(adapterDir);
        if (File.Exists(adapterDir))
            throw new PeftSharpException($"{adapterDir}: is a file, expected a folder to write {ConfigFileName} into");
        string path = Path.Combine(adapterDir, ConfigFileName);
        string json = ToJson(path);
        string tmp = Path.Combine(adapterDir, $".{ConfigFileName}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(adapterDir);
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                byte[] bytes = Encoding.ASCII.GetBytes(json); // ensure_ascii output is pure ASCII
                fs.Write(bytes);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            TryDelete(tmp);
            throw new PeftSharpException($"{path}: cannot be written ({OneLine(ex.Message)})", ex);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            if (File.Exists(path)) File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // best effort: the temporary file is hidden and harmless
        }
    }

    // ------------------------------------------------------------------ number literals

    internal void RememberLiteral(string field, string? key, double value, bool isFloat)
    {
        _literals ??= new();
        _literals[(field, key)] = (value, isFloat);
    }

    /// <summary>Whether <paramref name="value"/> was read from the file as a float literal (null: not read, or changed since).</summary>
    internal bool? RecalledLiteral(string field, string? key, double value) =>
        _literals is not null && _literals.TryGetValue((field, key), out var lit) && lit.Value.Equals(value)
            ? lit.IsFloat
            : null;

    private static string OneLine(string s) => s.ReplaceLineEndings(" ");
}
