using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// What every decoder block (GPT-2's <c>h.{i}</c>, Llama's <c>layers.{i}</c>) shares: its index, the model's
/// <see cref="ExtensionPoints"/>, and room for a tuner's own modules (a bottleneck adapter's weights) so that they
/// appear in <c>named_parameters()</c> under the block's path.
/// </summary>
public abstract class DecoderBlock : nn.Module<Tensor, Tensor>
{
    private protected DecoderBlock(string name, int index, ExtensionPoints extensions) : base(name)
    {
        Index = index;
        Extensions = extensions;
    }

    /// <summary>The block's index in the model (0-based).</summary>
    public int Index { get; }

    private protected ExtensionPoints Extensions { get; }

    /// <summary>Registers a tuner's module under this block (its parameters are named <c>{block path}.{name}.…</c>).</summary>
    public void AddModule(string name, nn.Module module)
    {
        register_module(name, module);
        added.Add(name);
    }

    /// <summary>Names of the modules tuners added to this block.</summary>
    public IReadOnlyCollection<string> AddedModules => added;
    readonly HashSet<string> added = new(StringComparer.Ordinal);

    /// <summary>Drops a module added with <see cref="AddModule"/> (it is not disposed).</summary>
    public void RemoveModule(string name)
    {
        if (_internal_submodules.ContainsKey(name)) _internal_submodules.Remove(name);
        added.Remove(name);
    }

    /// <summary>A sub-layer's output after the hooks of extension point 2, ready for the residual add.</summary>
    private protected Tensor Hooked(SubLayerKind kind, Tensor residual, Tensor input, Tensor output) =>
        Extensions.ApplySubLayerHooks(Index, kind, residual, input, output);

    /// <summary>This layer's key/value prefix, when this forward adds one.</summary>
    private protected (Tensor Keys, Tensor Values)? Prefix(bool addPrefix, long batch, ScalarType dtype, Device device) =>
        addPrefix ? Extensions.PrefixFor(Index, batch, dtype, device) : null;
}
