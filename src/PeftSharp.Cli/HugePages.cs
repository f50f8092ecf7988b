using System.Diagnostics;
using System.Runtime.InteropServices;

namespace PeftSharp.Cli;

/// <summary>
/// Large tensors (logits, activations) are fresh mmap'd memory that page-faults on first touch, one 4 KiB page at a
/// time; on the VMs we measured this made elementwise ops over 100 MB tensors 10–25× slower than the arithmetic.
/// glibc's <c>glibc.malloc.hugetlb=1</c> tunable asks for transparent huge pages instead. glibc reads tunables only at
/// process start, so when the variable is missing the tool starts itself again once with it set.
/// Opt out with <c>PEFTSHARP_NO_HUGEPAGES=1</c>.
/// </summary>
public static class HugePages
{
    const string Tunable = "glibc.malloc.hugetlb=1";

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    static extern int Kill(int pid, int signal);

    /// <summary>Returns the child's exit code when the process was re-executed, or null to carry on here.</summary>
    public static int? ReexecIfNeeded(string[] args)
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("PEFTSHARP_NO_HUGEPAGES") is not null) return null;
        string current = Environment.GetEnvironmentVariable("GLIBC_TUNABLES") ?? "";
        if (current.Contains("glibc.malloc.hugetlb", StringComparison.Ordinal)) return null;
        string? host = Environment.ProcessPath;
        if (host is null) return null;
        var info = new ProcessStartInfo(host) { UseShellExecute = false };
        // Under `dotnet PeftSharp.Cli.dll`, the host needs the assembly path again.
        if (Path.GetFileNameWithoutExtension(host) == "dotnet") info.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["GLIBC_TUNABLES"] = current.Length == 0 ? Tunable : current + ":" + Tunable;
        try
        {
            using var child = Process.Start(info);
            if (child is null) return null;
            // Ctrl+C reaches both processes; the child handles it (checkpoints), the parent just waits.
            Console.CancelKeyPress += (_, e) => e.Cancel = true;
            // SIGTERM is sent to this process only (docker stop, Kubernetes): pass it on, so the child checkpoints and exits.
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
            {
                context.Cancel = true;
                if (!child.HasExited) _ = Kill(child.Id, 15);
            });
            child.WaitForExit();
            return child.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null; // cannot start a process here: run without the tunable
        }
    }
}
