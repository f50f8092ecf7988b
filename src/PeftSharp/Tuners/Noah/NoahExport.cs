using PeftSharp.Peft;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Prompts;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Noah;

/// <summary>
/// Writes one NOAH sub-network as ordinary adapters (the one place the NOAH folder names other tuners: their configs
/// describe the exported folders). Each part of non-zero size becomes a folder of its own, and loading the three together
/// (a mixed model) gives the sub-network's forward exactly:
/// <list type="bullet">
/// <item><c>lora/</c>: a PEFT LORA folder of rank r, lora_alpha α (so the scale α/r is the supernet's), the first r rows of
/// every A and the first r columns of every B;</item>
/// <item><c>bottleneck/</c>: an LLM-Adapters BOTTLENECK folder (use_adapterp, on the MLP output projection, tanh, scaling 1)
/// of width d: the first d rows of adapter_down and columns of adapter_up;</item>
/// <item><c>prefix/</c>: a PEFT PREFIX_TUNING folder with num_virtual_tokens p: the first p rows of the prompt table as
/// <c>prompt_embeddings</c>.</item>
/// </list>
/// </summary>
public static class NoahExport
{
    /// <summary>Writes the non-empty parts of <paramref name="subnet"/> under <paramref name="outDir"/>; returns the folders written.</summary>
    public static IReadOnlyList<string> Write(NoahModel model, SubNet subnet, string outDir, string? baseModelNameOrPath = null)
    {
        var config = model.Config ?? throw new PeftSharpException("no NOAH supernet to export");
        if (!config.Allows(subnet)) throw new PeftSharpException($"sub-network {subnet} is not in the supernet's choices");
        var written = new List<string>();
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (subnet.Rank > 0)
        {
            string dir = Path.Combine(outDir, "lora");
            var tensors = new List<KeyValuePair<string, Tensor>>();
            foreach (var (path, l) in model.LoraParts)
            {
                tensors.Add(new($"{AdapterFiles.Prefix}{path}.lora_A.weight", l.A.weight!.narrow(0, 0, subnet.Rank)));
                tensors.Add(new($"{AdapterFiles.Prefix}{path}.lora_B.weight", l.B.weight!.narrow(1, 0, subnet.Rank)));
            }
            var names = model.LoraParts.Keys.Select(p => p[(p.LastIndexOf('.') + 1)..]).Distinct(StringComparer.Ordinal).ToList();
            var lora = new LoraConfig { R = subnet.Rank, LoraAlpha = config.LoraAlpha, TargetModules = config.TargetModules!.IsRegex ? config.TargetModules : TargetModules.FromNames(names), FanInFanOut = model.Model.Config.IsGpt2 };
            AdapterFiles.WriteFolder(dir, tensors, lora, baseModelNameOrPath);
            written.Add(dir);
        }
        if (subnet.AdapterDim > 0)
        {
            string dir = Path.Combine(outDir, "bottleneck");
            var tensors = new List<KeyValuePair<string, Tensor>>();
            foreach (var (path, a) in model.AdapterParts)
            {
                tensors.Add(new($"{AdapterFiles.Prefix}{path}.adapter_down.weight", a.Down.weight!.narrow(0, 0, subnet.AdapterDim)));
                tensors.Add(new($"{AdapterFiles.Prefix}{path}.adapter_up.weight", a.Up.weight!.narrow(1, 0, subnet.AdapterDim)));
            }
            var bottleneck = new BottleneckConfig
            {
                BottleneckSize = subnet.AdapterDim, NonLinearity = "tanh", UseAdapterP = true,
                TargetModules = TargetModules.FromNames([config.AdapterModule!]), InitWeights = "mam_adapter",
            };
            AdapterFiles.WriteFolder(dir, tensors, bottleneck, baseModelNameOrPath);
            written.Add(dir);
        }
        if (subnet.PromptLength > 0)
        {
            string dir = Path.Combine(outDir, "prefix");
            var prefix = new PrefixTuningConfig
            {
                NumVirtualTokens = subnet.PromptLength, TokenDim = config.TokenDim, NumAttentionHeads = config.NumAttentionHeads,
                NumLayers = config.NumLayers, NumTransformerSubmodules = 1,
            };
            AdapterFiles.WriteFolder(dir, [new(PromptFiles.TensorName, model.PromptTable.narrow(0, 0, subnet.PromptLength))], prefix, baseModelNameOrPath);
            written.Add(dir);
        }
        return written;
    }
}
