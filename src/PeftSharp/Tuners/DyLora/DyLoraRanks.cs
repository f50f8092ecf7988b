using PeftSharp.IO;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.DyLora;

/// <summary>Rank control for DyLoRA-trained (or any) LoRA adapters: run at rank b, export a plain rank-b adapter.</summary>
public static class DyLoraRanks
{
    /// <summary>Runs the adapter (default: every active one) at rank b on every layer; null for the full rank.</summary>
    public static void SetRank(this LoraModel lora, int? rank, string? adapter = null, bool frozen = false)
    {
        var adapters = adapter is null ? lora.ActiveAdapters : [adapter];
        foreach (var name in adapters)
        {
            if (rank is int b && (b < 1 || b > lora.Configs[name].R))
                throw new PeftSharpException($"--rank: {b} is outside 1..{lora.Configs[name].R} for adapter \"{name}\"");
            foreach (var layer in lora.LinearLayers.Values.Where(l => l.Adapters.ContainsKey(name)))
                layer.SetRank(name, rank is int r ? Math.Min(r, layer.Adapters[name].Rank) : null, frozen);
        }
    }

    /// <summary>
    /// Writes a plain PEFT LoRA adapter of rank b: A[:b], B[:, :b], r = b and the same lora_alpha, so its scaling
    /// α/b equals DyLoRA's at rank b. Python PEFT loads it unchanged.
    /// </summary>
    public static string ExportRank(string adapterDir, int rank, string outDir)
    {
        var config = LoraConfig.Load(adapterDir);
        if (rank < 1 || rank > config.R) throw new PeftSharpException($"--rank: {rank} is outside 1..{config.R} for {adapterDir}");
        if (config.RankPattern is { Count: > 0 }) throw new PeftSharpException($"{adapterDir}: export-rank does not support rank_pattern");
        if (config.UseDora) throw new PeftSharpException($"{adapterDir}: export-rank does not support DoRA adapters");
        foreach (var key in config.ExtensionData.Select(kv => kv.Key).Where(k => k.StartsWith("dylora_", StringComparison.Ordinal)).ToList())
            config.ExtensionData.Remove(key);
        config.R = rank;
        AtomicDirectory.CreateNew(outDir, temp => WriteTruncated(adapterDir, config, rank, temp));
        return outDir;
    }

    static void WriteTruncated(string adapterDir, LoraConfig config, int rank, string outDir)
    {
        using var file = SafetensorsFile.Open(Path.Combine(adapterDir, AdapterFiles.WeightsFileName));
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var key in file.Tensors.Keys)
        {
            var t = file.Read(key);
            if (key.EndsWith(".lora_A.weight", StringComparison.Ordinal) || key.EndsWith(".lora_embedding_A", StringComparison.Ordinal))
                t = t.narrow(0, 0, rank);
            else if (key.EndsWith(".lora_B.weight", StringComparison.Ordinal) || key.EndsWith(".lora_embedding_B", StringComparison.Ordinal))
                t = t.narrow(1, 0, rank);
            tensors.Add(new(key, t.contiguous()));
        }
        SafetensorsWriter.Save(Path.Combine(outDir, AdapterFiles.WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        config.Save(outDir);
    }
}
