using System.Security.Cryptography;

namespace PeftSharp.Tensors;

/// <summary>
/// Writes a file so that readers see either the old complete file or the new complete file,
/// never a half-written one: write a temporary file beside it, flush it to disk, then rename
/// it over the target (a rename within one folder is atomic on POSIX file systems and NTFS).
/// </summary>
internal static class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        // Same folder as the target, so the final rename never crosses file systems.
        var temporary = $"{path}.tmp-{RandomNumberGenerator.GetHexString(16, lowercase: true)}";
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            TryDelete(temporary);
            throw;
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { /* best effort: the original error matters more */ }
        catch (UnauthorizedAccessException) { }
    }
}
