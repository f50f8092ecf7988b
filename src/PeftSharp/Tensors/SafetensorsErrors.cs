using System.Text;

namespace PeftSharp.Tensors;

/// <summary>
/// Builds the one-line <see cref="PeftSharpException"/> messages for bad files:
/// "&lt;file&gt;: tensor "&lt;name&gt;": &lt;what was expected&gt;".
/// </summary>
internal static class SafetensorsErrors
{
    public static PeftSharpException File(string path, string what) =>
        new($"{path}: {OneLine(what)}");

    public static PeftSharpException Tensor(string path, string tensor, string what) =>
        new($"{path}: tensor {Quote(tensor)}: {OneLine(what)}");

    /// <summary>
    /// Quotes a name taken from a file. Names are attacker-controlled, so control characters
    /// (a newline would break the one-line promise) are escaped and very long names shortened.
    /// </summary>
    public static string Quote(string name)
    {
        const int maxLength = 200;
        var sb = new StringBuilder("\"");
        foreach (var c in name.Length > maxLength ? name[..maxLength] : name)
        {
            if (char.IsControl(c)) sb.Append($"\\u{(int)c:x4}");
            else if (c == '"' || c == '\\') sb.Append('\\').Append(c);
            else sb.Append(c);
        }
        if (name.Length > maxLength) sb.Append("...");
        return sb.Append('"').ToString();
    }

    private static string OneLine(string text) => text.Replace('\r', ' ').Replace('\n', ' ');
}
