using System.Reflection;
using PeftSharp.Peft;

namespace PeftSharp.Tuners;

/// <summary>
/// The table from <c>peft_type</c> to <see cref="ITuner"/> (PEFT's mapping.py). Tuners of this assembly are found by
/// reflection (a class implementing <see cref="ITuner"/> with a public parameterless constructor), so adding a method
/// touches only its own folder; tuners defined elsewhere call <see cref="Register"/>.
/// </summary>
public static class TunerRegistry
{
    static readonly object Gate = new();
    static Dictionary<string, ITuner>? tuners;

    static Dictionary<string, ITuner> Table
    {
        get
        {
            lock (Gate)
            {
                if (tuners is not null) return tuners;
                tuners = new Dictionary<string, ITuner>(StringComparer.Ordinal);
                foreach (var type in typeof(TunerRegistry).Assembly.GetTypes())
                {
                    if (type.IsAbstract || type.IsInterface || !typeof(ITuner).IsAssignableFrom(type)) continue;
                    if (type.GetConstructor(BindingFlags.Public | BindingFlags.Instance, Type.EmptyTypes) is null) continue;
                    var tuner = (ITuner)Activator.CreateInstance(type)!;
                    tuners[tuner.PeftType] = tuner;
                }
                return tuners;
            }
        }
    }

    /// <summary>Adds (or replaces) the tuner for its <c>peft_type</c>.</summary>
    public static void Register(ITuner tuner)
    {
        lock (Gate) Table[tuner.PeftType] = tuner;
    }

    /// <summary>Every registered tuner, by peft_type.</summary>
    public static IReadOnlyList<ITuner> All
    {
        get { lock (Gate) return Table.Values.OrderBy(t => t.PeftType, StringComparer.Ordinal).ToList(); }
    }

    /// <summary>The known peft_type values, comma-separated (for messages).</summary>
    public static string Known => string.Join(", ", All.Select(t => t.PeftType));

    /// <summary>The tuner registered for a peft_type, or null.</summary>
    public static ITuner? Find(string peftType)
    {
        lock (Gate) return Table.GetValueOrDefault(peftType);
    }

    /// <summary>The tuner for a peft_type; the error names <paramref name="source"/> and lists the known values.</summary>
    public static ITuner Get(string peftType, string source)
    {
        if (Find(peftType) is { } tuner) return tuner;
        string what = PeftTypes.All.Contains(peftType)
            ? $"peft_type \"{peftType}\" is a PEFT method PeftSharp does not implement"
            : $"unknown peft_type \"{peftType}\"";
        throw new PeftSharpException($"{source}: {what} (known: {Known})");
    }

    /// <summary>The tuner for an adapter folder, from the peft_type in its adapter_config.json.</summary>
    public static ITuner ForFolder(string adapterDir)
    {
        if (!Directory.Exists(adapterDir)) throw new PeftSharpException($"{adapterDir}: adapter folder not found");
        foreach (var tuner in All)
            if (tuner is IForeignFormatTuner foreign && foreign.Recognizes(adapterDir)) return tuner;
        return Get(PeftConfig.ReadPeftType(adapterDir), Path.Combine(adapterDir, PeftConfig.ConfigFileName));
    }
}
