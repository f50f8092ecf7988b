using System.Globalization;
using System.Numerics;
using System.Text.RegularExpressions;

namespace PeftSharp.Peft;

/// <summary>What <see cref="ModuleMatcher.Match"/> decided for one module path.</summary>
public enum ModuleMatch
{
    /// <summary>Not selected by target_modules (or filtered out by layers_to_transform).</summary>
    NotTargeted,

    /// <summary>Selected: LoRA is applied to this module.</summary>
    Targeted,

    /// <summary>Rejected by exclude_modules or because it is one of modules_to_save (or inside one).</summary>
    Excluded,
}

/// <summary>
/// Which modules a LoRA config adapts, and with what rank, alpha and scaling — PEFT's
/// <c>check_target_module_exists</c>, <c>_maybe_include_all_linear_layers</c> and <c>get_pattern_key</c>, as pure
/// functions of module paths. A module path is the dotted name of the module in the base model, as PyTorch's
/// <c>named_modules()</c> gives it (e.g. <c>transformer.h.0.attn.c_attn</c>, <c>model.layers.3.self_attn.q_proj</c>).
/// Patterns use Python <c>re</c> syntax and semantics (see PEFT), run on .NET's regex engine.
/// </summary>
public static class ModuleMatcher
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
    /// PEFT's <c>check_target_module_exists</c> for methods without layers_to_transform ((IA)³, bottleneck adapters):
    /// exclude_modules and modules_to_save first, then target_modules as a regex full match or a list of exact
    /// names / dot-suffixes.
    /// </summary>
    public static ModuleMatch Match(TargetModules targets, TargetModules? exclude, IReadOnlyList<string>? modulesToSave, string modulePath)
    {
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentNullException.ThrowIfNull(modulePath);
        if (IsExcluded(exclude, modulesToSave, modulePath)) return ModuleMatch.Excluded;
        if (targets.Regex is not null) return RegexTarget(targets, modulePath);
        var names = targets.Names!;
        return names.Contains(modulePath, StringComparer.Ordinal) || MatchesSuffix(names, modulePath) ? ModuleMatch.Targeted : ModuleMatch.NotTargeted;
    }

    private static bool IsExcluded(TargetModules? exclude, IReadOnlyList<string>? modulesToSave, string key)
    {
        if (exclude is not null)
        {
            if (exclude.Regex is not null)
            {
                if (exclude.Regex.Length > 0 && FullMatch("exclude_modules", exclude.Regex, key)) return true;
            }
            else if (exclude.Names!.Count > 0 && MatchesNameOrSuffix(exclude.Names, key))
            {
                return true;
            }
        }

        // Adapters never go on modules_to_save modules (nor inside them); each name is a regex fragment in PEFT.
        if (modulesToSave is { Count: > 0 } toSave)
        {
            foreach (var m in toSave)
                if (MatchStart("modules_to_save", @"(^|.*\.)" + m + @"($|\..*)", key).Success)
                    return true;
        }
        return false;
    }

    private static ModuleMatch RegexTarget(TargetModules targets, string key)
    {
        if (targets.IsAllLinear)
            throw new InvalidOperationException(
                "target_modules is \"all-linear\": expand it to the model's linear layers with ModuleMatcher.ExpandAllLinear before matching.");
        return FullMatch("target_modules", targets.Regex!, key) ? ModuleMatch.Targeted : ModuleMatch.NotTargeted;
    }

    /// <summary>Python's <c>re.fullmatch(pattern, key)</c>, for fields other than target_modules (e.g. feedforward_modules).</summary>
    public static bool FullMatchField(string field, string pattern, string key) => FullMatch(field, pattern, key);

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
    /// PEFT's <c>_maybe_include_all_linear_layers</c>: the target modules that <c>"all-linear"</c> stands for — the
    /// full paths of all linear (and GPT-2 Conv1D) layers, minus <paramref name="excludedPaths"/> (PEFT excludes the
    /// output layer, e.g. <c>lm_head</c>, or for SEQ_CLS models without one the <c>score</c>/<c>classifier</c>
    /// head, and modules inside existing adapter layers).
    /// </summary>
    public static TargetModules ExpandAllLinear(IEnumerable<string> linearModulePaths, IEnumerable<string>? excludedPaths = null)
    {
        ArgumentNullException.ThrowIfNull(linearModulePaths);
        var excluded = new HashSet<string>(excludedPaths ?? [], StringComparer.Ordinal);
        return TargetModules.FromNames(linearModulePaths.Where(p => !excluded.Contains(p)));
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

    // ------------------------------------------------------------------ helpers

    private static T PatternValue<T>(OrderedDictionary<string, T>? pattern, string field, string key, T fallback)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (pattern is null || pattern.Count == 0) return fallback;
        foreach (var (k, v) in pattern)
            if (MatchStart(field, @"(.*\.)?(" + k + @")$", key).Success)
                return v;
        // PEFT then looks the path itself up as a key
        return pattern.TryGetValue(key, out var exact) ? exact : fallback;
    }

    private static bool MatchesNameOrSuffix(IReadOnlyList<string> names, string key) =>
        names.Contains(key, StringComparer.Ordinal) || MatchesSuffix(names, key);

    private static bool MatchesSuffix(IReadOnlyList<string> names, string key)
    {
        foreach (var n in names)
            if (key.Length > n.Length && key.EndsWith(n, StringComparison.Ordinal) && key[key.Length - n.Length - 1] == '.')
                return true;
        return false;
    }

    private static bool FullMatch(string field, string pattern, string key)
    {
        try
        {
            return PyRegex.FullMatch(pattern, key);
        }
        catch (ArgumentException ex)
        {
            throw BadPattern(field, pattern, ex);
        }
    }

    private static System.Text.RegularExpressions.Match MatchStart(string field, string pattern, string key)
    {
        try
        {
            return PyRegex.MatchStart(pattern, key);
        }
        catch (ArgumentException ex)
        {
            throw BadPattern(field, pattern, ex);
        }
    }

    private static PeftSharpException BadPattern(string field, string pattern, ArgumentException ex) =>
        new($"field '{field}' gives an invalid regular expression \"{pattern}\" ({ex.Message.ReplaceLineEndings(" ")})", ex);

    /// <summary>Python's int() of a run of Unicode decimal digits (what <c>\d+</c> matched).</summary>
    private static BigInteger? ParseDigits(string digits)
    {
        if (digits.Length == 0) return null;
        BigInteger value = BigInteger.Zero;
        foreach (char c in digits)
        {
            int d = CharUnicodeInfo.GetDecimalDigitValue(c);
            if (d < 0) return null;
            value = value * 10 + d;
        }
        return value;
    }
}
