using System.Runtime.InteropServices;

namespace PeftSharp.Quantization;

/// <summary>
/// Gives freed native memory back to the operating system. libtorch allocates CPU tensors with malloc; glibc keeps
/// freed chunks below its (adaptive, up to 32 MiB) mmap threshold in the heap, so the temporaries of quantizing one
/// layer after another would stay resident. <c>malloc_trim(0)</c> releases them; elsewhere this does nothing.
/// </summary>
internal static class NativeHeap
{
    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);

    static bool unavailable = !OperatingSystem.IsLinux();

    public static void Trim()
    {
        if (unavailable) return;
        try { MallocTrim(0); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { unavailable = true; } // musl, macOS
    }
}
