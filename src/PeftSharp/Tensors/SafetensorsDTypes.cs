using static TorchSharp.torch;

namespace PeftSharp.Tensors;

/// <summary>
/// The safetensors dtype names we understand, their TorchSharp types and their sizes on disk.
/// Sizes come from this table, never from TorchSharp, so that a header is validated without touching libtorch.
/// </summary>
internal static class SafetensorsDTypes
{
    private static readonly (string Name, ScalarType Type, int Size)[] Table =
    [
        ("F64", ScalarType.Float64, 8),
        ("F32", ScalarType.Float32, 4),
        ("F16", ScalarType.Float16, 2),
        ("BF16", ScalarType.BFloat16, 2),
        ("I64", ScalarType.Int64, 8),
        ("I32", ScalarType.Int32, 4),
        ("I16", ScalarType.Int16, 2),
        ("I8", ScalarType.Int8, 1),
        ("U8", ScalarType.Byte, 1),
        ("BOOL", ScalarType.Bool, 1),
    ];

    /// <summary>The names as they appear in a header, for error messages.</summary>
    public static string Known => string.Join(", ", Table.Select(t => t.Name));

    public static bool TryParse(string name, out ScalarType type, out int size)
    {
        foreach (var entry in Table)
        {
            // Case-sensitive, like the format: "f32" is not a dtype.
            if (entry.Name == name)
            {
                (type, size) = (entry.Type, entry.Size);
                return true;
            }
        }
        (type, size) = (default, 0);
        return false;
    }

    public static bool TryGetName(ScalarType type, out string name, out int size)
    {
        foreach (var entry in Table)
        {
            if (entry.Type == type)
            {
                (name, size) = (entry.Name, entry.Size);
                return true;
            }
        }
        (name, size) = ("", 0);
        return false;
    }
}
