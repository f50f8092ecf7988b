using System.Globalization;
using System.Text;

namespace PeftSharp.Jinja;

/// <summary>Python's literal formatting that both templates (<c>tojson</c>, float printing) and PEFT's JSON files need.</summary>
public static class PythonLiterals
{
    /// <summary>
    /// <c>repr(float)</c> as json.dumps prints it: the shortest round-tripping digits, exponent notation when the
    /// decimal exponent is below -4 or at least 16 (<c>1e-05</c>, <c>1e+16</c>), otherwise positional with at least
    /// one fractional digit (<c>0.0</c>, <c>0.05</c>, <c>1000000000000000.0</c>); NaN and infinities as
    /// <c>NaN</c>, <c>Infinity</c>, <c>-Infinity</c>.
    /// </summary>
    public static string FloatRepr(double value)
    {
        if (double.IsNaN(value)) return "NaN";
        if (double.IsPositiveInfinity(value)) return "Infinity";
        if (double.IsNegativeInfinity(value)) return "-Infinity";
        bool negative = value < 0 || (value == 0 && double.IsNegative(value));
        if (value == 0) return negative ? "-0.0" : "0.0";

        // .NET's "R" gives the shortest digits that round-trip, like Python's repr; only the layout differs.
        string r = Math.Abs(value).ToString("R", CultureInfo.InvariantCulture);
        int exponent = 0;
        int ePos = r.IndexOfAny(['E', 'e']);
        string mantissa = r;
        if (ePos >= 0)
        {
            exponent = int.Parse(r.AsSpan(ePos + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            mantissa = r[..ePos];
        }
        int dot = mantissa.IndexOf('.');
        string intPart = dot >= 0 ? mantissa[..dot] : mantissa;
        string fracPart = dot >= 0 ? mantissa[(dot + 1)..] : "";
        string digits = intPart + fracPart;
        // value = 0.<digits> * 10^decpt
        int decpt = intPart.Length + exponent;
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') { lead++; decpt--; }
        digits = digits[lead..].TrimEnd('0');
        if (digits.Length == 0) digits = "0";

        var sb = new StringBuilder();
        if (negative) sb.Append('-');
        if (decpt <= -4 || decpt > 16)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            int exp = decpt - 1;
            sb.Append('e').Append(exp < 0 ? '-' : '+');
            sb.Append(Math.Abs(exp).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (decpt <= 0)
        {
            sb.Append("0.").Append('0', -decpt).Append(digits);
        }
        else if (decpt >= digits.Length)
        {
            sb.Append(digits).Append('0', decpt - digits.Length).Append(".0");
        }
        else
        {
            sb.Append(digits, 0, decpt).Append('.').Append(digits, decpt, digits.Length - decpt);
        }
        return sb.ToString();
    }

    /// <summary>
    /// A JSON string literal as json.dumps writes it: with <paramref name="ensureAscii"/> (its default) every character
    /// outside printable ASCII as lower-case \uXXXX (UTF-16 surrogate pairs), otherwise only control characters.
    /// </summary>
    public static void WriteString(StringBuilder sb, string s, bool ensureAscii = true)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ensureAscii && c > 0x7e))
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else
                        sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
