using TorchSharp.Modules;

namespace PeftSharp.Training.GaLore;

/// <summary>
/// GaLore's settings (Zhao et al. 2024), with the names and defaults of galore-torch and transformers'
/// <c>optim_args</c>: <c>rank</c> 128, <c>update_proj_gap</c> 200, <c>scale</c> 0.25, <c>proj_type</c> "std", on the
/// attention and MLP matrices.
/// </summary>
public sealed record GaLoreOptions
{
    /// <summary>Rank r of the projected gradient (capped at the matrix's smaller side).</summary>
    public int Rank { get; init; } = 128;
    /// <summary>The projector is recomputed from the current gradient's SVD every this many steps (galore-torch's update_proj_gap).</summary>
    public long UpdateProjGap { get; init; } = 200;
    /// <summary>Factor applied to the update after projecting it back (galore-torch's scale, the paper's α).</summary>
    public double Scale { get; init; } = 0.25;
    /// <summary>
    /// Parameters that get projected: 2-D weights whose name has a dot-separated part containing one of these
    /// strings, as transformers matches <c>optim_target_modules=["attn", "mlp"]</c>. Default: attention and MLP.
    /// </summary>
    public IReadOnlyList<string> TargetModules { get; init; } = ["attn", "mlp"];

    /// <exception cref="PeftSharpException">A value out of range.</exception>
    public void Validate()
    {
        if (Rank < 1) throw new PeftSharpException($"GaLore rank must be at least 1, got {Rank}");
        if (UpdateProjGap < 1) throw new PeftSharpException($"GaLore update_proj_gap must be at least 1, got {UpdateProjGap}");
        if (!(Scale > 0) || double.IsInfinity(Scale)) throw new PeftSharpException($"GaLore scale must be a positive number, got {Scale}");
        if (TargetModules.Count == 0) throw new PeftSharpException("GaLore needs at least one target module");
    }

    /// <summary>True when <paramref name="name"/> (a named_parameters() name) is one of the projected matrices.</summary>
    public bool Targets(string name, Parameter parameter)
    {
        if (parameter.dim() != 2 || !name.EndsWith(".weight", StringComparison.Ordinal)) return false;
        var parts = name.Split('.');
        return parts[..^1].Any(part => TargetModules.Any(t => part.Contains(t, StringComparison.Ordinal)));
    }

    /// <summary>The names of the projected parameters among <paramref name="parameters"/>.</summary>
    public HashSet<string> Select(IEnumerable<(string Name, Parameter Param)> parameters) =>
        parameters.Where(p => Targets(p.Name, p.Param)).Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
}
