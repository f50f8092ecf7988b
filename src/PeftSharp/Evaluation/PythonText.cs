using System.Globalization;
using System.Text;

namespace PeftSharp.Evaluation;

/// <summary>The few Python string and number behaviours the reference evaluation scripts rely on.</summary>
public static class PythonText
{
    /// <summary>Python's <c>str.isspace</c> for one character (adds the ASCII separators U+001C–U+001F to .NET's white space).</summary>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || c is >= '\u001c' and <= '\u001f';

    /// <summary>Python's <c>str.strip()</c> with no argument.</summary>
    public static string Strip(string s)
    {
        int start = 0, end = s.Length;
        while (start < end && IsSpace(s[start])) start++;
        while (end > start && IsSpace(s[end - 1])) end--;
        return s[start..end];
    }

    /// <summary>
    /// Python's <c>float(text)</c> for what the regex <c>-?\d+\.?\d*</c> matches: Unicode decimal digits count
    /// as Python's int/float parsing allows. Null when the text is not such a number.
    /// </summary>
    public static double? ParseFloat(string text)
    {
        var ascii = new StringBuilder(text.Length);
        foreach (char c in PythonStripForFloat(text))
        {
            if (char.IsDigit(c)) ascii.Append((char)('0' + (int)char.GetNumericValue(c)));
            else ascii.Append(c);
        }
        string s = ascii.ToString();
        if (s.Length == 0) return null;
        string lower = s.ToLowerInvariant().TrimStart('+', '-');
        if (lower is "inf" or "infinity" or "nan")
        {
            double v = lower == "nan" ? double.NaN : double.PositiveInfinity;
            return s.StartsWith('-') ? -v : v;
        }
        return double.TryParse(s, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent,
            CultureInfo.InvariantCulture, out double value) ? value : null;
    }

    static string PythonStripForFloat(string s) => Strip(s);
}
