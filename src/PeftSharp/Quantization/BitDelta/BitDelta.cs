using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tensors;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Quantization.BitDelta;

/// <summary>
/// BitDelta (Liu et al. 2024): a fine-tuned model stored as its base plus, for every linear weight inside the decoder
/// blocks, the sign of the weight delta (1 bit per weight, packed) and one scale per matrix, initialised to mean |Δ|
/// (see <see cref="BitDeltaDistillation"/> for fitting the scales to the fine-tuned model's logits). Tensors outside
/// the blocks' linear layers (embeddings, norms, biases, an untied head) that differ from the base are kept whole.
/// Reconstruction: W = W_base + scale · sign, sign = +1 where Δ ≥ 0 and −1 elsewhere.
/// </summary>
public sealed class BitDelta : IDisposable
{
    /// <summary>The weights file of a BitDelta folder.</summary>
    public const string WeightsFileName = "bitdelta.safetensors";
    /// <summary>The config file of a BitDelta folder.</summary>
    public const string ConfigFileName = "bitdelta_config.json";
    /// <summary>The <c>format</c> value written in the config.</summary>
    public const string Format = "peftsharp-bitdelta";
    const string SignSuffix = ".sign";
    const string ScaleSuffix = ".scale";

    /// <summary>One compressed matrix: its parameter name, stored shape, packed signs and scale.</summary>
    public sealed class Entry(string name, long[] shape, byte[] signs, double scale)
    {
        /// <summary>The parameter name.</summary>
        public string Name { get; } = name;
        /// <summary>The matrix's stored shape.</summary>
        public long[] Shape { get; } = shape;
        /// <summary>The signs of the delta, packed 8 per byte.</summary>
        public byte[] Signs { get; } = signs;
        /// <summary>The scale every sign is multiplied by (mean absolute delta, then distilled).</summary>
        public double Scale { get; set; } = scale;
        /// <summary>Number of elements in the matrix.</summary>
        public long Count => Shape.Aggregate(1L, (a, b) => a * b);
    }

    /// <summary>The compressed matrices.</summary>
    public IReadOnlyList<Entry> Entries { get; }
    /// <summary>Parameters kept whole, by name (those outside the compressed matrices that differ from the base).</summary>
    public IReadOnlyDictionary<string, Tensor> Full { get; }

    BitDelta(IReadOnlyList<Entry> entries, IReadOnlyDictionary<string, Tensor> full)
    {
        Entries = entries;
        Full = full;
    }

    /// <summary>The names of the weights BitDelta compresses: every linear layer's weight inside the decoder blocks.</summary>
    public static IReadOnlyList<string> CompressibleWeights(CausalLM model) =>
        model.named_modules()
            .Where(m => m.module is Linear && IsInsideBlocks(m.name))
            .Select(m => m.name + ".weight")
            .ToList();

    static bool IsInsideBlocks(string path) => path.Contains(".layers.", StringComparison.Ordinal) || path.Contains(".h.", StringComparison.Ordinal);

    /// <summary>Compresses <paramref name="finetuned"/> against <paramref name="baseModel"/> (same architecture and shapes).</summary>
    public static BitDelta Compress(CausalLM baseModel, CausalLM finetuned)
    {
        var baseParams = baseModel.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        var ftParams = finetuned.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        foreach (var (name, p) in ftParams)
        {
            if (!baseParams.TryGetValue(name, out var b)) throw new PeftSharpException($"--finetuned: parameter '{name}' has no counterpart in the base model");
            if (!b.shape.SequenceEqual(p.shape))
                throw new PeftSharpException($"--finetuned: parameter '{name}' has shape [{string.Join(", ", p.shape)}], the base's is [{string.Join(", ", b.shape)}]");
        }
        if (baseParams.Count != ftParams.Count)
            throw new PeftSharpException($"--base: the base model has parameters the fine-tuned one lacks ({string.Join(", ", baseParams.Keys.Except(ftParams.Keys).Take(3))})");
        var compressible = CompressibleWeights(finetuned).ToHashSet();
        var entries = new List<Entry>();
        var full = new Dictionary<string, Tensor>();
        using var _ = no_grad();
        foreach (var (name, ft) in ftParams)
        {
            using var scope = NewDisposeScope();
            var delta = ft.to_type(ScalarType.Float32).sub(baseParams[name].to_type(ScalarType.Float32));
            if (compressible.Contains(name))
            {
                double scale = delta.abs().mean().item<float>();
                entries.Add(new Entry(name, ft.shape, PackSigns(delta.ge(0).to_type(ScalarType.Byte).reshape(-1).data<byte>().ToArray()), scale));
            }
            else if (delta.abs().max().item<float>() > 0)
            {
                full[name] = ft.detach().clone().DetachFromDisposeScope();
            }
        }
        return new BitDelta(entries, full);
    }

    /// <summary>Packs 0/1 flags 8 to a byte, least significant bit first (flag i is bit i % 8 of byte i / 8).</summary>
    public static byte[] PackSigns(ReadOnlySpan<byte> positive)
    {
        var packed = new byte[(positive.Length + 7) / 8];
        for (int i = 0; i < positive.Length; i++)
            if (positive[i] != 0) packed[i >> 3] |= (byte)(1 << (i & 7));
        return packed;
    }

    /// <summary>The signs as ±1 in <paramref name="dtype"/>, shaped like the weight.</summary>
    public static Tensor UnpackSigns(Entry entry, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        using var bytes = tensor(entry.Signs, ScalarType.Byte).to_type(ScalarType.Int32);
        using var shifts = arange(8, dtype: ScalarType.Int32);
        // bit k of byte j → element 8j + k
        var bits = bytes.unsqueeze(1).bitwise_right_shift(shifts.unsqueeze(0)).bitwise_and(1).reshape(-1).narrow(0, 0, entry.Count);
        return bits.to_type(dtype).mul(2).sub(1).reshape(entry.Shape).to(device).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Turns <paramref name="model"/> (the base model, loaded normally) into the fine-tuned model's approximation:
    /// W += scale · sign for each entry (in float32, then cast), and the whole tensors copied in.
    /// </summary>
    public void ApplyTo(CausalLM model)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        using var _ = no_grad();
        foreach (var e in Entries)
        {
            if (!parameters.TryGetValue(e.Name, out var p)) throw new PeftSharpException($"--delta: '{e.Name}' names no parameter of this model");
            if (!p.shape.SequenceEqual(e.Shape))
                throw new PeftSharpException($"--delta: '{e.Name}' is [{string.Join(", ", e.Shape)}], the model's is [{string.Join(", ", p.shape)}]");
            using var scope = NewDisposeScope();
            var signs = UnpackSigns(e, ScalarType.Float32, p.device);
            p.copy_(p.to_type(ScalarType.Float32).add(signs.mul(e.Scale)));
        }
        foreach (var (name, value) in Full)
        {
            if (!parameters.TryGetValue(name, out var p)) throw new PeftSharpException($"--delta: '{name}' names no parameter of this model");
            if (!p.shape.SequenceEqual(value.shape))
                throw new PeftSharpException($"--delta: '{name}' is [{string.Join(", ", value.shape)}], the model's is [{string.Join(", ", p.shape)}]");
            p.copy_(value);
        }
    }

    /// <summary>Bytes of the packed signs and scales against the same deltas held in 16 bits, and the bytes of the whole tensors.</summary>
    public (long SignAndScaleBytes, long Delta16Bytes, long FullBytes) Sizes() =>
        (Entries.Sum(e => (long)e.Signs.Length + 4), Entries.Sum(e => e.Count * 2), Full.Values.Sum(t => t.numel() * t.ElementSize));

    /// <summary>Writes <c>bitdelta.safetensors</c> (&lt;name&gt;.sign as packed uint8, &lt;name&gt;.scale as a float32 scalar, whole tensors by name) and its config, atomically.</summary>
    public void Save(string dir, string? baseModel = null, JsonObject? extra = null) =>
        AtomicDirectory.CreateNew(dir, temp =>
        {
            using var scope = NewDisposeScope();
            var tensors = new List<KeyValuePair<string, Tensor>>();
            foreach (var e in Entries)
            {
                tensors.Add(new(e.Name + SignSuffix, tensor(e.Signs, ScalarType.Byte)));
                tensors.Add(new(e.Name + ScaleSuffix, tensor((float)e.Scale)));
            }
            foreach (var (name, t) in Full) tensors.Add(new(name, t.detach().cpu().contiguous()));
            SafetensorsWriter.Save(Path.Combine(temp, WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = Format });
            var config = new JsonObject
            {
                ["format"] = Format,
                ["version"] = 1,
                ["base_model_name_or_path"] = baseModel,
                ["sign_packing"] = "row-major over the stored weight, 8 signs per byte, least significant bit first; 1 = delta >= 0 (+scale), 0 = delta < 0 (-scale)",
                ["compressed"] = new JsonObject(Entries.Select(e => KeyValuePair.Create(e.Name, (JsonNode?)new JsonArray(e.Shape.Select(d => (JsonNode?)d).ToArray())))),
                ["full"] = new JsonArray(Full.Keys.Select(k => (JsonNode?)k).ToArray()),
            };
            if (extra is not null) foreach (var (k, v) in extra) config[k] = v?.DeepClone();
            File.WriteAllText(Path.Combine(temp, ConfigFileName), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        });

    /// <summary>Reads a folder written by <see cref="Save"/>, checking every tensor against its config.</summary>
    public static BitDelta Load(string dir)
    {
        string configPath = Path.Combine(dir, ConfigFileName), weightsPath = Path.Combine(dir, WeightsFileName);
        if (!File.Exists(configPath)) throw new PeftSharpException($"--delta {dir}: no {ConfigFileName} (not a BitDelta folder)");
        if (!File.Exists(weightsPath)) throw new PeftSharpException($"--delta {dir}: no {WeightsFileName}");
        var config = IO.JsonErrors.ReadObjectFile(configPath);
        if ((string?)config["format"] != Format) throw new PeftSharpException($"{configPath}: \"format\" must be \"{Format}\"");
        var compressed = config["compressed"] as JsonObject ?? throw new PeftSharpException($"{configPath}: \"compressed\" must be an object of name → shape");
        using var file = SafetensorsFile.Open(weightsPath);
        var entries = new List<Entry>();
        foreach (var (name, shapeNode) in compressed)
        {
            var shape = (shapeNode as JsonArray)?.Select(d => (long)d!).ToArray() ?? throw new PeftSharpException($"{configPath}: shape of '{name}' must be a list");
            long count = shape.Aggregate(1L, (a, b) => a * b);
            if (!file.Tensors.TryGetValue(name + SignSuffix, out var signInfo) || !file.Tensors.ContainsKey(name + ScaleSuffix))
                throw new PeftSharpException($"{weightsPath}: '{name}{SignSuffix}' or '{name}{ScaleSuffix}' is missing");
            if (signInfo.ScalarType != ScalarType.Byte || signInfo.Shape.Length != 1 || signInfo.Shape[0] != (count + 7) / 8)
                throw new PeftSharpException($"{weightsPath}: '{name}{SignSuffix}' must be uint8 [{(count + 7) / 8}] for a [{string.Join(", ", shape)}] weight");
            using var signs = file.Read(name + SignSuffix);
            using var scale = file.Read(name + ScaleSuffix, dtype: ScalarType.Float32);
            if (scale.numel() != 1) throw new PeftSharpException($"{weightsPath}: '{name}{ScaleSuffix}' must be a scalar");
            entries.Add(new Entry(name, shape, signs.data<byte>().ToArray(), scale.item<float>()));
        }
        var full = new Dictionary<string, Tensor>();
        foreach (var name in (config["full"] as JsonArray ?? []).Select(n => (string)n!))
        {
            if (!file.Tensors.ContainsKey(name)) throw new PeftSharpException($"{weightsPath}: tensor '{name}' listed in \"full\" is missing");
            full[name] = file.Read(name);
        }
        return new BitDelta(entries, full);
    }

    /// <summary>Disposes the tensors kept whole.</summary>
    public void Dispose()
    {
        foreach (var t in Full.Values) t.Dispose();
    }
}
