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

    /// <summary>An empty container, registered under the name <c>adapters</c>.</summary>
    public AdapterContainer() : base("adapters") { }

    /// <summary>A container registered under another module name.</summary>
    public AdapterContainer(string moduleName) : base(moduleName) { }

    /// <summary>The module of adapter <paramref name="name"/>.</summary>
    public T this[string name] => items[name];
    /// <summary>Whether an adapter of that name is held.</summary>
    public bool Contains(string name) => items.ContainsKey(name);
    /// <summary>The adapter names held.</summary>
    public IEnumerable<string> Names => items.Keys;

    /// <summary>Adds and registers <paramref name="module"/> under <paramref name="name"/>.</summary>
    /// <exception cref="PeftSharpException">An adapter of that name already exists.</exception>
    public void Add(string name, T module)
    {
        if (items.ContainsKey(name)) throw new PeftSharpException($"adapter \"{name}\" already exists on this layer");
        items[name] = module;
        register_module(name, module);
    }

    /// <summary>Unregisters and disposes the module of adapter <paramref name="name"/>; does nothing if there is none.</summary>
    public void Remove(string name)
    {
        if (!items.Remove(name, out var module)) return;
        _internal_submodules.Remove(name);
        module.Dispose();
    }
}
