using PeftSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// AdapterFusion (Pfeiffer et al. 2021) on a <see cref="CausalLM"/>: N frozen AdapterHub bottleneck adapters and, at every
/// sub-layer where all of them sit, a <see cref="FusionLayer"/> that learns how to mix their outputs. Only the fusion
/// layers train (AdapterHub's <c>train_adapter_fusion(Fuse(...))</c>). The adapters live in the model's
/// <see cref="AdapterHubModel"/>; a fusion is known by its own name here and by AdapterHub's key (the adapter names
/// joined by ',') in parameter names and files.
/// </summary>
public sealed partial class AdapterFusionModel
{
    readonly Dictionary<string, Fusion> fusions = new(StringComparer.Ordinal);
    readonly Dictionary<string, bool> trainableFlags = new(StringComparer.Ordinal);

    sealed record Fusion(AdapterFusionConfig Config, FusionSetup Setup, IReadOnlyList<string> OwnedAdapters);

    AdapterFusionModel(CausalLM model)
    {
        Model = model;
        Hub = AdapterHubModel.For(model);
    }

    /// <summary>The base model.</summary>
    public CausalLM Model { get; }

    /// <summary>The model's AdapterHub adapters, which the fusions read.</summary>
    public AdapterHubModel Hub { get; }

    /// <summary>The fusion that runs, or null.</summary>
    public string? Active { get; private set; }

    /// <summary>The fusions by name: config and fused adapters.</summary>
    public IReadOnlyDictionary<string, (AdapterFusionConfig Config, IReadOnlyList<string> Adapters)> Fusions =>
        fusions.ToDictionary(kv => kv.Key, kv => (kv.Value.Config, kv.Value.Setup.Adapters), StringComparer.Ordinal);

    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<CausalLM, AdapterFusionModel> PerModel = new();

    /// <summary>The model's fusions (created on first use).</summary>
    public static AdapterFusionModel For(CausalLM model) => PerModel.GetValue(model, m => new AdapterFusionModel(m));

    /// <summary>
    /// AdapterHub's <c>add_adapter_fusion(Fuse(adapters))</c>: adds fusion layers over adapters already in <see cref="Hub"/>
    /// (inactive). Refused for parallel adapters and for adapters that do not sit at the same sub-layers.
    /// </summary>
    public void AddFusion(string name, AdapterFusionConfig config, IReadOnlyList<string> adapters, long? seed = null, bool trainable = true) =>
        AddFusion(name, config, adapters, seed, trainable, owned: []);

    void AddFusion(string name, AdapterFusionConfig config, IReadOnlyList<string> adapters, long? seed, bool trainable, IReadOnlyList<string> owned)
    {
        if (fusions.ContainsKey(name)) throw new PeftSharpException($"fusion \"{name}\" already exists");
        if (adapters.Count == 0) throw new PeftSharpException($"fusion \"{name}\": no adapters to fuse");
        if (adapters.Distinct(StringComparer.Ordinal).Count() != adapters.Count)
            throw new PeftSharpException($"fusion \"{name}\": adapters {string.Join(", ", adapters)} name one adapter twice");
        var configs = adapters.Select(a => Hub.Configs.TryGetValue(a, out var c) ? c : throw new PeftSharpException($"fusion \"{name}\": no adapter named \"{a}\"")).ToList();
        if (configs.Any(c => c.IsParallel))
            throw new PeftSharpException($"fusion \"{name}\": AdapterFusion fuses serial adapters; {adapters[configs.FindIndex(c => c.IsParallel)]} is a parallel adapter");
        bool mh = configs[0].MhAdapter, output = configs[0].OutputAdapter;
        if (configs.Any(c => c.MhAdapter != mh || c.OutputAdapter != output))
            throw new PeftSharpException($"fusion \"{name}\": the adapters {string.Join(", ", adapters)} do not sit at the same sub-layers (mh_adapter/output_adapter differ)");
        string key = string.Join(",", adapters);
        if (fusions.Values.Any(f => f.Setup.Key == key))
            throw new PeftSharpException($"fusion \"{name}\": the adapters {key} are already fused under another name");
        using var gen = seed is null ? null : new Generator((ulong)seed.Value, Model.Device);
        for (int layer = 0; layer < Model.Config.Layers; layer++)
            foreach (var location in new[] { SubLayerKind.Attention, SubLayerKind.Mlp })
            {
                if (location == SubLayerKind.Attention ? !mh : !output) continue;
                var fusionLayer = new FusionLayer(config, Model.Config.Hidden, Model.Device, gen);
                foreach (var p in fusionLayer.parameters()) p.requires_grad = false;
                Hub.LocationAt(layer, location).adapter_fusion_layer.Add(key, fusionLayer);
            }
        fusions[name] = new Fusion(config, new FusionSetup(key, [.. adapters]), owned);
        trainableFlags[name] = trainable;
    }

    /// <summary>
    /// Loads the fused adapters from their folders into <see cref="Hub"/> (frozen; named as saved) and adds a new fusion
    /// over them: what <c>train --method fusion</c> starts from.
    /// </summary>
    public void AddFusionOfFolders(string name, AdapterFusionConfig config, IReadOnlyList<string> adapterDirs, long? seed = null, bool trainable = true)
    {
        var loaded = new List<string>();
        bool Taken(string n) => n.Length == 0 || Hub.Configs.ContainsKey(n) || loaded.Contains(n);
        try
        {
            foreach (var dir in adapterDirs)
            {
                var (savedName, _) = AdapterHubFiles.ReadConfig(dir, Model);
                // Adapters trained by `peftsharp train` are all saved as "default": such an adapter takes its folder's name.
                string folderName = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir))).Replace('.', '_').Replace(',', '_');
                bool preferFolder = savedName == Peft.AdapterFiles.DefaultAdapter && !Taken(folderName);
                string adapterName = preferFolder ? folderName : !Taken(savedName) ? savedName : !Taken(folderName) ? folderName
                    : throw new PeftSharpException($"{dir}: an adapter named \"{savedName}\" (and one named after the folder, \"{folderName}\") is already loaded; adapters to fuse need distinct names");
                loaded.Add(AdapterHubFiles.LoadAdapter(Hub, dir, adapterName, trainable: false));
            }
            AddFusion(name, config, loaded, seed, trainable, owned: loaded);
        }
        catch
        {
            foreach (var a in loaded) Hub.DeleteAdapter(a);
            throw;
        }
    }

    internal void AddLoadedFusion(string name, AdapterFusionConfig config, IReadOnlyList<string> adapters, IReadOnlyList<string> owned, bool trainable) =>
        AddFusion(name, config, adapters, seed: null, trainable, owned);

    /// <summary>Makes fusion <paramref name="name"/> the one that runs (null: none); its layers train when it was added trainable.</summary>
    public void SetActive(string? name)
    {
        if (name is not null && !fusions.ContainsKey(name)) throw new PeftSharpException($"no fusion named \"{name}\"");
        Active = name;
        var setup = name is null ? null : fusions[name].Setup;
        foreach (var loc in Hub.Locations.Values) loc.ActiveFusion = setup;
        foreach (var n in fusions.Keys)
            foreach (var (_, p) in ParametersOf(n)) p.requires_grad = n == name && trainableFlags[n];
    }

    /// <summary>A fusion's parameters by model parameter name
    /// (<c>transformer.h.0.output_adapters.adapter_fusion_layer.a,b.value.weight</c>).</summary>
    public IEnumerable<(string Name, Parameter Param)> ParametersOf(string name)
    {
        if (!fusions.TryGetValue(name, out var fusion)) throw new PeftSharpException($"no fusion named \"{name}\"");
        foreach (var ((layer, location), loc) in Hub.Locations.OrderBy(kv => kv.Key.Layer).ThenBy(kv => kv.Key.Location))
        {
            if (!loc.adapter_fusion_layer.Contains(fusion.Setup.Key)) continue;
            string prefix = $"{AdapterHubModel.BlockPath(Model, layer)}.{SubLayerAdapters.ModuleName(location)}.adapter_fusion_layer.{fusion.Setup.Key}.";
            foreach (var (pn, p) in loc.adapter_fusion_layer[fusion.Setup.Key].named_parameters()) yield return (prefix + pn, p);
        }
    }

    /// <summary>The fusion layers of one fusion, by (layer, location).</summary>
    public IEnumerable<((int Layer, SubLayerKind Location) At, FusionLayer Layer)> LayersOf(string name)
    {
        if (!fusions.TryGetValue(name, out var fusion)) throw new PeftSharpException($"no fusion named \"{name}\"");
        foreach (var (at, loc) in Hub.Locations.OrderBy(kv => kv.Key.Layer).ThenBy(kv => kv.Key.Location))
            if (loc.adapter_fusion_layer.Contains(fusion.Setup.Key)) yield return (at, loc.adapter_fusion_layer[fusion.Setup.Key]);
    }

    /// <summary>
    /// AdapterHub's <c>get_fusion_regularization_loss</c> for the active fusion: Σ over layers of 0.01·‖I − V‖², or null
    /// when the fusion has no value projection or <c>regularization</c> is off (AdapterTrainer adds it to the loss).
    /// </summary>
    public Tensor? RegularizationLoss()
    {
        if (Active is null || !fusions[Active].Config.Regularization) return null;
        Tensor? total = null;
        foreach (var (_, layer) in LayersOf(Active))
        {
            var term = layer.RegularizationLoss();
            if (term is null) continue;
            if (total is null) total = term;
            else
            {
                var sum = total.add(term);
                total.Dispose();
                term.Dispose();
                total = sum;
            }
        }
        return total;
    }

    /// <summary>Removes a fusion (and the adapters it loaded itself).</summary>
    public void DeleteFusion(string name)
    {
        if (!fusions.Remove(name, out var fusion)) throw new PeftSharpException($"no fusion named \"{name}\"");
        trainableFlags.Remove(name);
        foreach (var loc in Hub.Locations.Values)
        {
            loc.adapter_fusion_layer.Remove(fusion.Setup.Key);
            if (loc.ActiveFusion?.Key == fusion.Setup.Key) loc.ActiveFusion = null;
        }
        if (Active == name) Active = null;
        foreach (var a in fusion.OwnedAdapters) if (Hub.Configs.ContainsKey(a)) Hub.DeleteAdapter(a);
    }

    /// <summary>The base model alone (and any single active adapter) until the returned handle is disposed.</summary>
    public IDisposable Disable()
    {
        var saved = Hub.Locations.Values.Select(l => (l, l.ActiveFusion)).ToList();
        foreach (var loc in Hub.Locations.Values) loc.ActiveFusion = null;
        return new OnDispose(() => { foreach (var (l, f) in saved) l.ActiveFusion = f; });
    }

    /// <summary>Removes every fusion and the adapters they loaded; detaches the AdapterHub layers when nothing else is left.</summary>
    public void Unload()
    {
        foreach (var name in fusions.Keys.ToList()) DeleteFusion(name);
        if (Hub.Configs.Count == 0) Hub.Unload();
        PerModel.Remove(Model);
    }
}
