using System.Diagnostics;
using System.Text.Json;

namespace PeftSharp.Tests.Cli;

/// <summary>Runs the built <c>peftsharp</c> command in a child process, as a user would.</summary>
internal static class CliRunner
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        /// <summary>The --json convention: the last stdout line is one JSON object.</summary>
        public JsonElement Json()
        {
            var last = Stdout.TrimEnd('\n', '\r').Split('\n')[^1];
            return JsonDocument.Parse(last).RootElement;
        }
    }

    static readonly Lazy<string> CliDll = new(() =>
    {
        // tests/PeftSharp.Tests/bin/<Configuration>/net10.0/ → src/PeftSharp.Cli/bin/<Configuration>/net10.0/PeftSharp.Cli.dll
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string configuration = baseDir.Parent!.Name;
        var root = baseDir;
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "PeftSharp.slnx"))) root = root.Parent;
        if (root is null) throw new InvalidOperationException("repository root (PeftSharp.slnx) not found above " + AppContext.BaseDirectory);
        var dll = Path.Combine(root.FullName, "src", "PeftSharp.Cli", "bin", configuration, baseDir.Name, "PeftSharp.Cli.dll");
        if (!File.Exists(dll)) throw new InvalidOperationException("CLI not built: " + dll);
        return dll;
    });

    /// <summary>Starts the tool without waiting (servers); stdout and stderr are redirected, the caller disposes it.</summary>
    public static Process Start(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.Environment["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1";
        info.ArgumentList.Add(CliDll.Value);
        foreach (var a in args) info.ArgumentList.Add(a);
        return Process.Start(info)!;
    }

    /// <summary>The built PeftSharp.Cli.dll, for tests that drive the process themselves (signals).</summary>
    public static string DllPath => CliDll.Value;

    public static Result Run(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.Environment["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"; // as ./peftsharp sets it: no restart of the tool
        info.ArgumentList.Add(CliDll.Value);
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("peftsharp " + string.Join(' ', args));
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>A user mistake: exit code 1, one "error: ..." line on stderr, no stack trace.</summary>
    public static string AssertUserError(Result r)
    {
        Assert.Equal(1, r.ExitCode);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.DoesNotContain("   at ", r.Stderr);
        return lines[0];
    }
}
