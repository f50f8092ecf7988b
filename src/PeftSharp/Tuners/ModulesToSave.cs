using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>
/// PEFT's <c>modules_to_save</c> for one module: every adapter owns a full trainable copy of the module's
/// parameters, and the original values are kept. The module's live parameters hold whichever copy is active,
/// so the model's own forward code needs no change; switching adapters swaps values in and out.
/// </summary>
public sealed class ModulesToSave
{
    readonly List<(string Name, Parameter Param)> live;
    readonly Dictionary<string, Tensor> original;
    readonly Dictionary<string, Dictionary<string, Tensor>> copies = new(StringComparer.Ordinal);

    /// <summary>
    /// Keeps the original values of <paramref name="module"/>'s parameters; <paramref name="path"/> is its module path.
    /// </summary>
    public ModulesToSave(string path, nn.Module module)
    {
        Path = path;
        live = module.named_parameters().Select(p => (p.name, p.parameter)).ToList();
        original = live.ToDictionary(p => p.Name, p => p.Param.detach().clone());
    }

    /// <summary>The module path (e.g. <c>lm_head</c>).</summary>
    public string Path { get; }
    /// <summary>The adapter whose copy is in the live parameters, or null for the original values.</summary>
    public string? Active { get; private set; }
    /// <summary>Adapters that own a copy.</summary>
    public IEnumerable<string> Adapters => copies.Keys;
    /// <summary>The module's live parameters (name relative to the module, parameter).</summary>
    public IReadOnlyList<(string Name, Parameter Param)> Live => live;
    /// <summary>Parameters in one copy.</summary>
    public long CopySize => live.Sum(p => p.Param.numel());

    /// <summary>Gives <paramref name="adapter"/> its own copy, starting from the original values.</summary>
    public void AddAdapter(string adapter)
    {
        copies[adapter] = original.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
    }

    /// <summary>Drops <paramref name="adapter"/>'s copy (restoring the original values first if it is active).</summary>
    public void RemoveAdapter(string adapter)
    {
        if (Active == adapter) Activate(null, trainable: false);
        if (copies.Remove(adapter, out var c)) foreach (var t in c.Values) t.Dispose();
    }

    /// <summary>Stores the live values into the active copy, then loads the given adapter's copy (null: the original).</summary>
    public void Activate(string? adapter, bool trainable)
    {
        using var _ = no_grad();
        if (Active is not null) foreach (var (name, p) in live) copies[Active][name].copy_(p);
        var source = adapter is null ? original : copies[adapter];
        foreach (var (name, p) in live)
        {
            p.copy_(source[name]);
            p.requires_grad = adapter is not null && trainable;
        }
        Active = adapter;
    }

    /// <summary>The values of an adapter's copy (live values when it is the active one).</summary>
    public IEnumerable<(string Name, Tensor Value)> ValuesOf(string adapter) =>
        Active == adapter ? live.Select(p => (p.Name, (Tensor)p.Param)) : copies[adapter].Select(kv => (kv.Key, kv.Value));

    /// <summary>Writes values into an adapter's copy (and the live parameters when it is active).</summary>
    public void SetValue(string adapter, string name, Tensor value)
    {
        using var _ = no_grad();
        if (Active == adapter) live.First(p => p.Name == name).Param.copy_(value);
        else copies[adapter][name].copy_(value);
    }
}
