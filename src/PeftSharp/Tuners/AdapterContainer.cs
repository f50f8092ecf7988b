using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>
/// Holds one module per adapter name, registered so parameter names read like PEFT's
/// (<c>lora_A.default.weight</c>). Entries can be added and removed after the host is built.
/// </summary>
public sealed class AdapterContainer<T> : nn.Module where T : nn.Module
{
    readonly Dictionary<string, T> items = new(StringComparer.Ordinal);

    public AdapterContainer() : base("adapters") { }

    /// <summary>A container registered under another module name.</summary>
    public AdapterContainer(string moduleName) : base(moduleName) { }

    public T this[string name] => items[name];
    public bool Contains(string name) => items.ContainsKey(name);
    public IEnumerable<string> Names => items.Keys;

    public void Add(string name, T module)
    {
        if (items.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists on this layer");
        items[name] = module;
        register_module(name, module);
    }

    public void Remove(string name)
    {
        if (!items.Remove(name, out var module)) return;
        _internal_submodules.Remove(name);
        module.Dispose();
    }
}
