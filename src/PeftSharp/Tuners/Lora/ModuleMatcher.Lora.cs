using System.Numerics;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Peft;

// The LoRA config's part of module matching (layers_to_transform, rank_pattern, alpha_pattern), kept beside LoRA.
public static partial class ModuleMatcher
{
    /// <summary>True when LoRA adapts the module at <paramref name="modulePath"/>.</summary>
    public static bool IsTarget(LoraConfig config, string modulePath) => Match(config, modulePath) == ModuleMatch.Targeted;

    /// <summary>
    /// PEFT's <c>check_target_module_exists</c>. In order: exclude_modules (list: exact name or dot-suffix;
    /// string: regex full match) and modules_to_save exclude; with no target_modules but target_parameters nothing
    /// is targeted; a string target_modules is a regex full match; a list entry matches the path exactly
    /// (then layers_to_transform is NOT applied, as in PEFT) or as a dot-suffix (<c>path.EndsWith("." + name)</c>,
    /// so <c>c_attn</c> does not match <c>xc_attn</c>), in which case layers_to_transform filters by the layer index.
    /// </summary>
    /// <exception cref="PeftSharpException">target_modules is unset (use <see cref="LoraDefaults.ApplyTo"/>), or a
    /// pattern is not a valid regex.</exception>
    /// <exception cref="InvalidOperationException">target_modules is <c>"all-linear"</c>, which must first be
    /// expanded with <see cref="ExpandAllLinear"/>.</exception>
    public static ModuleMatch Match(LoraConfig config, string modulePath)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(modulePath);
        string key = modulePath;

        if (IsExcluded(config.ExcludeModules, config.ModulesToSave, key)) return ModuleMatch.Excluded;

        var targets = config.TargetModules;
        if (targets is null)
        {
            if (config.TargetParameters is not null) return ModuleMatch.NotTargeted;
            throw new PeftSharpException(
                "field 'target_modules' is not set; set it in the adapter config or fill in the model type's default with LoraDefaults.ApplyTo");
        }

        if (targets.Regex is not null) return RegexTarget(targets, key);

        var names = targets.Names!;
        if (names.Contains(key, StringComparer.Ordinal)) return ModuleMatch.Targeted;

        bool found = MatchesSuffix(names, key);
        var layers = config.LayersToTransform;
        bool usingLayerIndexes = layers is not null && (layers.IsSingle || layers.Items.Count != 0);
        if (usingLayerIndexes && found)
        {
            var index = LayerIndex(config, key);
            if (index is null) return ModuleMatch.NotTargeted;
            found = layers!.Items.Any(i => i == index.Value);
        }
        return found ? ModuleMatch.Targeted : ModuleMatch.NotTargeted;
    }

    /// <summary>
    /// The layer index PEFT's layers_to_transform logic finds in <paramref name="modulePath"/>: the first number
    /// that is a whole path segment after a segment named by layers_pattern (each pattern tried in order), or, with no
    /// layers_pattern, after any segment (<c>model.layers.3.mlp</c> → 3, <c>transformer.h.11.attn</c> → 11, and for
    /// <c>model.layers.1.experts.0.w1</c> the outer 1). Null when there is none.
    /// </summary>
    public static BigInteger? LayerIndex(LoraConfig config, string modulePath)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(modulePath);
        var patterns = config.LayersPattern;
        System.Text.RegularExpressions.Match? m = null;
        bool noPattern = patterns is null || (patterns.IsSingle ? patterns.Items[0].Length == 0 : patterns.Items.Count == 0);
        if (noPattern)
        {
            m = MatchStart("layers_pattern", @".*?\.[^.]*\.(\d+)\.", modulePath);
        }
        else
        {
            foreach (var p in patterns!.Items)
            {
                m = MatchStart("layers_pattern", @".*?\." + p + @"\.(\d+)\.", modulePath);
                if (m.Success) break;
            }
        }
        if (m is null || !m.Success) return null;
        return ParseDigits(m.Groups[1].Value)
               ?? throw new PeftSharpException(
                   $"field 'layers_pattern' captures \"{m.Groups[1].Value}\" instead of a layer number in module \"{modulePath}\"");
    }

    /// <summary>
    /// The rank for a module: the value of the first rank_pattern key (in dictionary order) that matches a
    /// dot-suffix of the path as a regex (PEFT's <c>get_pattern_key</c>: <c>re.match(r"(.*\.)?(KEY)$", path)</c>),
    /// otherwise <see cref="LoraConfig.R"/>.
    /// </summary>
    public static int RankFor(LoraConfig config, string modulePath)
    {
        ArgumentNullException.ThrowIfNull(config);
        return PatternValue(config.RankPattern, "rank_pattern", modulePath, config.R);
    }

    /// <summary>The alpha for a module: alpha_pattern looked up like rank_pattern in <see cref="RankFor"/>,
    /// otherwise <see cref="LoraConfig.LoraAlpha"/>.</summary>
    public static double AlphaFor(LoraConfig config, string modulePath)
    {
        ArgumentNullException.ThrowIfNull(config);
        return PatternValue(config.AlphaPattern, "alpha_pattern", modulePath, config.LoraAlpha);
    }

    /// <summary>The LoRA scaling for a module: alpha / r, or alpha / sqrt(r) with use_rslora.</summary>
    public static double Scaling(LoraConfig config, string modulePath)
    {
        int r = RankFor(config, modulePath);
        double alpha = AlphaFor(config, modulePath);
        if (r <= 0)
            throw new PeftSharpException($"field 'r' (or its rank_pattern entry) for module \"{modulePath}\" is {r}; expected a positive integer");
        return config.UseRslora ? alpha / Math.Sqrt(r) : alpha / r;
    }

    /// <summary>
    /// Applies <see cref="ExpandAllLinear"/> to <paramref name="config"/> when its target_modules is
    /// <c>"all-linear"</c> (any case); otherwise leaves it unchanged. Returns whether it changed.
    /// </summary>
    public static bool ExpandAllLinear(LoraConfig config, IEnumerable<string> linearModulePaths, IEnumerable<string>? excludedPaths = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.TargetModules is not { IsAllLinear: true }) return false;
        config.TargetModules = ExpandAllLinear(linearModulePaths, excludedPaths);
        return true;
    }
}
