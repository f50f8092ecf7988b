namespace PeftSharp.Benchmarks;

/// <summary>Process memory from /proc (Linux): the peak resident set is what a 24 GB machine must hold.</summary>
public static class ResourceUsage
{
    /// <summary>Peak resident set size in bytes (VmHWM), or 0 where /proc is unavailable.</summary>
    public static long PeakRssBytes() => ReadStatusKb("VmHWM:") * 1024;

    /// <summary>Current resident set size in bytes (VmRSS).</summary>
    public static long RssBytes() => ReadStatusKb("VmRSS:") * 1024;

    static long ReadStatusKb(string field)
    {
        const string path = "/proc/self/status";
        if (!File.Exists(path)) return 0;
        foreach (var line in File.ReadLines(path))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line[field.Length..].Trim().Split(' ')[0]);
        return 0;
    }
}
