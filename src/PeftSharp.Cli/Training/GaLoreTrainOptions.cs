using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Training;
using PeftSharp.Training.GaLore;
using TorchSharp.Modules;

namespace PeftSharp.Cli.Training;

/// <summary>
/// <c>train --optimizer adamw|galore-adamw</c> and GaLore's settings (docs/galore.md). GaLore needs <c>--method full</c>:
/// it projects the gradients of the model's own attention and MLP matrices.
/// </summary>
public sealed class GaLoreTrainOptions
{
    public Option<string> Optimizer = new("--optimizer") { Description = "adamw (default) or galore-adamw (GaLore; --method full)", DefaultValueFactory = _ => "adamw" };
    public Option<int> Rank = new Option<int>("--galore-rank") { Description = "GaLore: rank of the projected gradients", DefaultValueFactory = _ => 128 }.AtLeast(1);
    public Option<long> UpdateGap = new Option<long>("--galore-update-gap") { Description = "GaLore: steps between projector updates (update_proj_gap)", DefaultValueFactory = _ => 200 }.AtLeast(1);
    public Option<double> Scale = new Option<double>("--galore-scale") { Description = "GaLore: scale of the projected-back update", DefaultValueFactory = _ => 0.25 }.Above(0);
    public Option<string> Target = new("--galore-target") { Description = "GaLore: comma-separated name parts of the projected matrices", DefaultValueFactory = _ => "attn,mlp" };

    public Option[] All => [Optimizer, Rank, UpdateGap, Scale, Target];

    /// <summary>True for --optimizer galore-adamw; checks the value and that the method trains the model's own weights.</summary>
    /// <exception cref="PeftSharpException">An unknown optimizer, or GaLore with an adapter method.</exception>
    public bool UsesGaLore(TrainSettings s, string method)
    {
        string name = s.Get(Optimizer).ToLowerInvariant();
        if (name is not ("adamw" or "galore-adamw")) throw new PeftSharpException($"--optimizer: expected adamw or galore-adamw, got \"{name}\"");
        if (name == "galore-adamw" && method != "full") throw new PeftSharpException($"--optimizer galore-adamw: GaLore trains the model's own matrices; use --method full (got --method {method})");
        return name == "galore-adamw";
    }

    /// <summary>GaLore's optimizer over <paramref name="groups"/>, or null for AdamW.</summary>
    /// <exception cref="PeftSharpException">No parameter matches --galore-target.</exception>
    public GaLoreAdamW? Build(TrainSettings s, string method, IReadOnlyList<ParameterGroup> groups, TrainingOptions options)
    {
        if (!UsesGaLore(s, method)) return null;
        var galore = new GaLoreOptions
        {
            Rank = s.Get(Rank),
            UpdateProjGap = s.Get(UpdateGap),
            Scale = s.Get(Scale),
            TargetModules = s.Get(Target).Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
        };
        if (galore.TargetModules.Count == 0) throw new PeftSharpException("--galore-target: expected comma-separated name parts such as attn,mlp");
        var projected = galore.Select(groups.SelectMany(g => g.Parameters));
        if (projected.Count == 0) throw new PeftSharpException($"--galore-target {s.Get(Target)}: no 2-D weight of the model has a name part containing {string.Join(" or ", galore.TargetModules)}");
        return new GaLoreAdamW(groups, projected, galore, options.AdamBeta1, options.AdamBeta2, options.AdamEpsilon);
    }
}
