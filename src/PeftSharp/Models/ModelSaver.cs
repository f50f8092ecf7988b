using PeftSharp.IO;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Writes a model as a Hugging Face folder laid out like the folder it was loaded from: the same tensor names
/// (with or without GPT-2's "transformer." prefix), layouts (Conv1D stays [in, out]) and per-tensor dtypes, plus
/// config, tokenizer and other side files copied. The folder is built under a temporary name and renamed into place.
/// </summary>
public static class ModelSaver
{
    /// <summary>Checkpoints larger than this are written in shards, as transformers' default max_shard_size.</summary>
    public const long MaxShardBytes = 5L * 1000 * 1000 * 1000;

    static readonly string[] WeightFilePatterns = ["*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth"];

    /// <summary>
    /// Writes <paramref name="model"/> to the new folder <paramref name="outDir"/> laid out like <paramref name="sourceDir"/> (its weight names, layouts, dtypes and side files).
    /// </summary>
    /// <exception cref="PeftSharpException"><paramref name="outDir"/> exists and is not empty.</exception>
    public static void SaveLike(CausalLM model, string sourceDir, string outDir) =>
        AtomicDirectory.CreateNew(outDir, temp =>
        {
            WriteWeights(model, sourceDir, temp);
            CopySideFiles(sourceDir, temp);
        });

    /// <summary>
    /// Writes the weights and side files into an existing folder (a full fine-tune's --out, which also holds its
    /// checkpoints); each file is replaced atomically.
    /// </summary>
    public static void SaveInto(CausalLM model, string sourceDir, string outDir)
    {
        WriteWeights(model, sourceDir, outDir);
        CopySideFiles(sourceDir, outDir);
    }

    static void WriteWeights(CausalLM model, string sourceDir, string outDir)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        var names = new HashSet<string>(parameters.Keys);
        using var source = SafetensorsCheckpoint.Open(sourceDir);
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        long bytes = 0;
        foreach (var (key, info) in source.Tensors)
        {
            Tensor value;
            if (model.ParameterNameFor(key, names) is string name) value = parameters[name];
            else if (key == "lm_head.weight") value = model.OutputEmbedding; // tied head saved by some exporters
            else value = source.Read(key); // buffers kept as they were (GPT-2's attn.bias)
            var converted = value.detach().to_type(info.ScalarType).cpu().contiguous();
            tensors.Add(new(key, converted));
            bytes += info.ByteLength;
        }
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        if (bytes > MaxShardBytes) SafetensorsCheckpoint.SaveSharded(outDir, tensors, MaxShardBytes, metadata);
        else SafetensorsWriter.Save(Path.Combine(outDir, SafetensorsCheckpoint.SingleFileName), tensors, metadata);
    }

    /// <summary>Copies everything but the weight files (config, tokenizer, generation settings...); <paramref name="except"/> names more files to leave out.</summary>
    internal static void CopySideFiles(string sourceDir, string outDir, params string[] except)
    {
        var skip = WeightFilePatterns.SelectMany(p => Directory.EnumerateFiles(sourceDir, p)).ToHashSet();
        foreach (var name in except) skip.Add(Path.Combine(sourceDir, name));
        foreach (var file in Directory.EnumerateFiles(sourceDir))
            if (!skip.Contains(file)) File.Copy(file, Path.Combine(outDir, Path.GetFileName(file)), overwrite: true);
    }
}
