using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// Swaps a parameter of a module built on the meta device for a real tensor, one parameter at a time, so a model can
/// be filled layer by layer without ever allocating all of it. TorchSharp has no public way to replace a registered
/// parameter; this sets the C# field (our layers keep parameters in public fields named as Hugging Face names them)
/// and updates the registration through <c>nn.Module.ConditionallyRegisterParameter</c>, as TorchSharp's own
/// <c>Module.to()</c> does.
/// </summary>
internal static class ModuleParameters
{
    static readonly MethodInfo Register = typeof(nn.Module).GetMethod(
        "ConditionallyRegisterParameter", BindingFlags.Instance | BindingFlags.NonPublic, [typeof(string), typeof(Parameter)])
        ?? throw new InvalidOperationException("TorchSharp's nn.Module.ConditionallyRegisterParameter(string, Parameter) was not found");

    /// <summary>Replaces <paramref name="owner"/>'s parameter <paramref name="name"/> with <paramref name="data"/> (the old one is disposed).</summary>
    public static Parameter Replace(nn.Module owner, string name, Tensor data, bool requiresGrad)
    {
        var field = owner.GetType().GetField(name, BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)
            ?? throw new InvalidOperationException($"{owner.GetType().Name} has no field '{name}' holding its parameter");
        var old = field.GetValue(owner) as Parameter;
        var parameter = new Parameter(data.DetachFromDisposeScope(), requiresGrad);
        field.SetValue(owner, parameter);
        Register.Invoke(owner, [name, parameter]);
        old?.Dispose();
        return parameter;
    }

    /// <summary>Every module of the tree by its path ("" for the root).</summary>
    public static Dictionary<string, nn.Module> ModulesByPath(nn.Module root)
    {
        var modules = new Dictionary<string, nn.Module>(StringComparer.Ordinal) { [""] = root };
        foreach (var (name, module) in root.named_modules()) modules[name] = module;
        return modules;
    }

    /// <summary>Splits "a.b.weight" into the owner's path "a.b" and the local name "weight".</summary>
    public static (string Owner, string Local) Split(string parameterName)
    {
        int dot = parameterName.LastIndexOf('.');
        return dot < 0 ? ("", parameterName) : (parameterName[..dot], parameterName[(dot + 1)..]);
    }
}
