using PeftSharp.Peft;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Prompts;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.UniPelt;

/// <summary>
/// Writes a UniPELT adapter's three parts as ordinary adapters (the one place the UniPELT folder names other tuners:
/// their configs describe the exported folders): <c>lora/</c> a PEFT LORA folder (same r and lora_alpha),
/// <c>prefix/</c> a PEFT PREFIX_TUNING folder (the prefix table as <c>prompt_embeddings</c>) and <c>bottleneck/</c> an
/// LLM-Adapters BOTTLENECK folder (use_adapterp, on the MLP output projection, scaling 1). A gate depends on each input,
/// so no ordinary adapter holds it: each gate is replaced by a constant folded into the part's last projection (LoRA's
/// B, the adapter's up-projection, the prefix values of each layer) — 1 when <c>gates</c> is null (the parts at full
/// strength), or the means from <see cref="UniPeltModel.MeasureGates"/>. The export is exact when the gates are
/// constant (saturated, or with zero gate weights); otherwise it is an approximation, and loading the three folders
/// together differs from the UniPELT adapter by how much the gates vary.
/// </summary>
public static class UniPeltExport
{
    /// <summary>Writes lora/, prefix/ and bottleneck/ under <paramref name="outDir"/>; returns the folders written.</summary>
    public static IReadOnlyList<string> Write(UniPeltModel model, string outDir, GateMeans? gates = null, string? baseModelNameOrPath = null)
    {
        var config = model.Config ?? throw new PeftSharpException("no UniPELT adapter to export");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var written = new List<string>();

        string loraDir = Path.Combine(outDir, "lora");
        var loraTensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (path, l) in model.LoraParts)
        {
            double g = gates?.Lora[path] ?? 1.0;
            loraTensors.Add(new($"{AdapterFiles.Prefix}{path}.lora_A.weight", l.A.weight!));
            loraTensors.Add(new($"{AdapterFiles.Prefix}{path}.lora_B.weight", l.B.weight!.mul(g)));
        }
        var names = model.LoraParts.Keys.Select(p => p[(p.LastIndexOf('.') + 1)..]).Distinct(StringComparer.Ordinal).ToList();
        var lora = new LoraConfig
        {
            R = config.R, LoraAlpha = config.LoraAlpha, FanInFanOut = model.Model.Config.IsGpt2,
            TargetModules = config.TargetModules!.IsRegex ? config.TargetModules : TargetModules.FromNames(names),
        };
        AdapterFiles.WriteFolder(loraDir, loraTensors, lora, baseModelNameOrPath);
        written.Add(loraDir);

        string prefixDir = Path.Combine(outDir, "prefix");
        int layers = config.NumLayers!.Value, kv = config.TokenDim!.Value;
        var table = model.PrefixTable.detach().clone().view(config.NumVirtualTokens, layers, 2, kv);
        for (int l = 0; l < layers; l++)
            table[TensorIndex.Colon, l, 1].mul_(gates?.Prefix[l] ?? 1.0);
        var prefix = new PrefixTuningConfig
        {
            NumVirtualTokens = config.NumVirtualTokens, TokenDim = kv, NumAttentionHeads = config.NumAttentionHeads, NumLayers = layers, NumTransformerSubmodules = 1,
        };
        AdapterFiles.WriteFolder(prefixDir, [new(PromptFiles.TensorName, table.view(config.NumVirtualTokens, layers * 2L * kv))], prefix, baseModelNameOrPath);
        written.Add(prefixDir);

        string adapterDir = Path.Combine(outDir, "bottleneck");
        var adapterTensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (path, a) in model.AdapterParts)
        {
            double g = gates?.Adapter[path] ?? 1.0;
            adapterTensors.Add(new($"{AdapterFiles.Prefix}{path}.adapter_down.weight", a.Down.weight!));
            adapterTensors.Add(new($"{AdapterFiles.Prefix}{path}.adapter_up.weight", a.Up.weight!.mul(g)));
        }
        var bottleneck = new BottleneckConfig
        {
            BottleneckSize = config.BottleneckSize, NonLinearity = config.NonLinearity, UseAdapterP = true,
            TargetModules = TargetModules.FromNames([config.AdapterModule!]), InitWeights = "mam_adapter",
        };
        AdapterFiles.WriteFolder(adapterDir, adapterTensors, bottleneck, baseModelNameOrPath);
        written.Add(adapterDir);
        return written;
    }
}
