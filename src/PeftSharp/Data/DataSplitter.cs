using System.Security.Cryptography;
using System.Text;

namespace PeftSharp.Data;

/// <summary>
/// A deterministic train/validation split by hash: a record goes to validation when the first 8 bytes of
/// SHA-256(seed, record content), read as a fraction of 2^64, fall below the validation fraction. The same record
/// always lands on the same side, whatever the file's order or size, and exact duplicates stay together.
/// </summary>
public static class DataSplitter
{
    /// <summary>
    /// Whether <paramref name="record"/> belongs to the validation side: a SHA-256 hash of the seed and the record's content, read as a number in [0, 1), is below <paramref name="fraction"/>.
    /// </summary>
    public static bool IsValidation(DataRecord record, double fraction, int seed)
    {
        var bytes = SHA256.HashData(Encoding.UTF8.GetBytes($"{seed}\n{record.Content}"));
        ulong x = BitConverter.ToUInt64(bytes, 0);
        return x / 18446744073709551616.0 < fraction;
    }

    /// <summary>
    /// Splits records into train and validation sides by <see cref="IsValidation"/>; <paramref name="path"/> names the file in errors.
    /// </summary>
    /// <exception cref="PeftSharpException"><paramref name="fraction"/> is outside [0, 1], or a record is not usable (the message names <paramref name="path"/> and the line).</exception>
    public static (List<DataRecord> Train, List<DataRecord> Validation) Split(IReadOnlyList<DataRecord> records, double fraction, int seed, string path)
    {
        if (fraction is < 0 or > 1) throw new PeftSharpException($"--validation-fraction: expected a value in [0, 1], got {fraction}");
        var train = new List<DataRecord>();
        var validation = new List<DataRecord>();
        foreach (var r in records)
        {
            if (r.Format is null) throw new PeftSharpException($"{path}:{r.Line}: {r.Problem}; run `peftsharp data clean` first");
            (IsValidation(r, fraction, seed) ? validation : train).Add(r);
        }
        return (train, validation);
    }
}
