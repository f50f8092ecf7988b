using System.CommandLine;
using System.Globalization;
using System.Runtime.CompilerServices;

namespace PeftSharp.Cli;

/// <summary>
/// The allowed range of a numeric flag, declared once where the option is made and checked before any work starts:
/// on the command line by System.CommandLine's validators, and for values read from a file (train's --config) by
/// <see cref="Check{T}"/>. The message is one line naming the flag and the range: "--lr: expected a number &gt; 0, got -1".
/// </summary>
/// <example>
/// <code>
/// var lr = new Option&lt;double&gt;("--lr") { DefaultValueFactory = _ =&gt; 2e-4 }.Above(0);
/// var steps = new Option&lt;long?&gt;("--steps").AtLeast(1);
/// var dropout = new Option&lt;double&gt;("--dropout").InRange(0, 1, maxInclusive: false);   // [0, 1)
/// var topP = new Option&lt;double&gt;("--top-p").InRange(0, 1, minInclusive: false);       // (0, 1]
/// </code>
/// </example>
public static class FlagRanges
{
    sealed record Range(double Min, bool MinInclusive, double Max, bool MaxInclusive)
    {
        public bool Contains(double v) =>
            !double.IsNaN(v) && (MinInclusive ? v >= Min : v > Min) && (MaxInclusive ? v <= Max : v < Max);

        public string Describe(bool integer)
        {
            string kind = integer ? "an integer" : "a number";
            string F(double x) => x.ToString(CultureInfo.InvariantCulture);
            return (double.IsNegativeInfinity(Min), double.IsPositiveInfinity(Max)) switch
            {
                (false, true) => $"{kind} {(MinInclusive ? "≥" : ">")} {F(Min)}",
                (true, false) => $"{kind} {(MaxInclusive ? "≤" : "<")} {F(Max)}",
                _ => $"{kind} in {(MinInclusive ? "[" : "(")}{F(Min)}, {F(Max)}{(MaxInclusive ? "]" : ")")}",
            };
        }
    }

    static readonly ConditionalWeakTable<Option, Range> Ranges = [];

    /// <summary>Values must be ≥ <paramref name="min"/> (counts: steps, batch size, ranks...).</summary>
    public static Option<T> AtLeast<T>(this Option<T> option, double min) => Add(option, new Range(min, true, double.PositiveInfinity, false));

    /// <summary>Values must be &gt; <paramref name="min"/> (learning rate, scales...).</summary>
    public static Option<T> Above<T>(this Option<T> option, double min) => Add(option, new Range(min, false, double.PositiveInfinity, false));

    /// <summary>Values must lie between <paramref name="min"/> and <paramref name="max"/>, each end included unless told otherwise.</summary>
    public static Option<T> InRange<T>(this Option<T> option, double min, double max, bool minInclusive = true, bool maxInclusive = true) =>
        Add(option, new Range(min, minInclusive, max, maxInclusive));

    /// <summary>
    /// Throws the one-line error if <paramref name="value"/> is outside the range declared for <paramref name="option"/>
    /// (for values that did not come through the command line parser). Null and options with no range pass.
    /// </summary>
    public static T Check<T>(Option<T> option, T value)
    {
        if (Violation(option, value) is string message) throw new PeftSharpException(message);
        return value;
    }

    /// <summary>The one-line complaint if <paramref name="value"/> breaks <paramref name="option"/>'s range, else null.</summary>
    public static string? Violation(Option option, object? value)
    {
        if (!Ranges.TryGetValue(option, out var range) || ToDouble(value) is not double v || range.Contains(v)) return null;
        var type = Nullable.GetUnderlyingType(option.ValueType) ?? option.ValueType;
        bool integer = type == typeof(int) || type == typeof(long) || type == typeof(short);
        return $"{option.Name}: expected {range.Describe(integer)}, got {Convert.ToString(value, CultureInfo.InvariantCulture)}";
    }

    static Option<T> Add<T>(Option<T> option, Range range)
    {
        var type = Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T);
        if (!(type == typeof(int) || type == typeof(long) || type == typeof(short) || type == typeof(double) || type == typeof(float) || type == typeof(decimal)))
            throw new ArgumentException($"{option.Name}: a range needs a numeric option, not {typeof(T).Name}");
        Ranges.AddOrUpdate(option, range);
        option.Validators.Add(result =>
        {
            if (result.Tokens.Count == 0) return; // a default value: valid by construction
            if (Violation(option, result.GetValueOrDefault<T>()) is string message) result.AddError(message);
        });
        return option;
    }

    static double? ToDouble(object? value) => value switch
    {
        int i => i,
        long l => l,
        short s => s,
        double d => d,
        float f => f,
        decimal m => (double)m,
        _ => null,
    };
}
