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
/// Which modules a PEFT config adapts (the LoRA-specific rank/alpha rules are in Tuners/Lora/ModuleMatcher.Lora.cs) — PEFT's
/// <c>check_target_module_exists</c>, <c>_maybe_include_all_linear_layers</c> and <c>get_pattern_key</c>, as pure
/// functions of module paths. A module path is the dotted name of the module in the base model, as PyTorch's
/// <c>named_modules()</c> gives it (e.g. <c>transformer.h.0.attn.c_attn</c>, <c>model.layers.3.self_attn.q_proj</c>).
/// Patterns use Python <c>re</c> syntax and semantics (see PEFT), run on .NET's regex engine.
/// </summary>
public static partial class ModuleMatcher
{
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
