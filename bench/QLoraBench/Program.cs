using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using PeftSharp.Bench;
using PeftSharp.Quantization;
using static TorchSharp.torch;

// QLoRA measurements (docs/qlora.md). Usage:
//   dotnet run -c Release --project bench/QLoraBench -- memory [--layers N]     bf16 vs NF4+DQ resident memory, one child process each
//   dotnet run -c Release --project bench/QLoraBench -- loftq [--size 2048] [--rank 16] [--iterations 5] [--scaling 1]
//   dotnet run -c Release --project bench/QLoraBench -- speed [--size 2048]
//   dotnet run -c Release --project bench/QLoraBench -- merge [--size 2048] [--rank 16]   re-quantizing a merged layer
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

string command = args.Length > 0 ? args[0] : "help";
int Int(string name, int fallback) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback;
double Double(string name, double fallback) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? double.Parse(args[i + 1]) : fallback;
string? Str(string name) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;

switch (command)
{
    case "memory" when Str("--child") is string mode:
        return Child(mode, Int("--layers", 22));
    case "memory":
        return Memory(Int("--layers", 22));
    case "loftq":
        return LoftQBench(Int("--size", 2048), Int("--rank", 16), Int("--iterations", 5), Double("--scaling", 1.0));
    case "speed":
        return Speed(Int("--size", 2048));
    case "merge":
        return MergeBench(Int("--size", 2048), Int("--rank", 16));
    default:
        Console.Error.WriteLine("usage: QLoraBench memory [--layers N] | loftq [--size N] [--rank R] [--iterations T] [--scaling S] | speed [--size N] | merge [--size N] [--rank R]");
        return 2;
}

// One mode in this (fresh) process; prints one JSON line.
static int Child(string mode, int layers)
{
    var config = QLoraBench.TinyLlamaConfig(layers);
    var bnb = new BitsAndBytesConfig { QuantType = FourBitType.Nf4, DoubleQuant = true, ComputeDType = ScalarType.BFloat16 };
    var quantization = mode switch
    {
        "bf16" => null,
        "nf4-dq" => bnb,
        "nf4-dq-head" => bnb with { SkipModules = [] },
        _ => throw new ArgumentException($"unknown mode {mode}"),
    };
    var r = QLoraBench.MeasureRandomLoad(config, quantization);
    Console.WriteLine(JsonSerializer.Serialize(new
    {
        mode = r.Mode, rss_before = r.RssBefore, rss_after = r.RssAfter, peak_after = r.PeakAfter,
        weight_bytes = r.WeightBytes, parameters = r.Parameters, seconds = r.Seconds,
    }));
    return 0;
}

static int Memory(int layers)
{
    Console.WriteLine($"TinyLlama-1.1B config ({layers} layers), random init, built layer by layer; one fresh process per row");
    Console.WriteLine($"{"mode",-48} {"params",14} {"weights MiB",12} {"RSS before",11} {"RSS after",10} {"model RSS",10} {"peak",10} {"seconds",8}");
    var results = new Dictionary<string, JsonElement>();
    foreach (var mode in new[] { "bf16", "nf4-dq", "nf4-dq-head" })
    {
        var json = RunChild(mode, layers);
        results[mode] = json;
        double Mi(string p) => json.GetProperty(p).GetInt64() / 1048576.0;
        long before = json.GetProperty("rss_before").GetInt64();
        Console.WriteLine($"{json.GetProperty("mode").GetString(),-48} {json.GetProperty("parameters").GetInt64(),14:N0} {Mi("weight_bytes"),12:F0} {Mi("rss_before"),11:F0} {Mi("rss_after"),10:F0} " +
                          $"{(json.GetProperty("rss_after").GetInt64() - before) / 1048576.0,10:F0} {(json.GetProperty("peak_after").GetInt64() - before) / 1048576.0,10:F0} {json.GetProperty("seconds").GetDouble(),8:F1}");
    }
    double Delta(string m) => results[m].GetProperty("rss_after").GetInt64() - results[m].GetProperty("rss_before").GetInt64();
    double Total(string m) => results[m].GetProperty("rss_after").GetInt64();
    Console.WriteLine($"model RSS ratio NF4+DQ / bf16: {Delta("nf4-dq") / Delta("bf16"):F3}  (lm_head also 4-bit: {Delta("nf4-dq-head") / Delta("bf16"):F3})");
    Console.WriteLine($"process RSS ratio NF4+DQ / bf16: {Total("nf4-dq") / Total("bf16"):F3}  (lm_head also 4-bit: {Total("nf4-dq-head") / Total("bf16"):F3})");
    return 0;
}

static JsonElement RunChild(string mode, int layers)
{
    // Re-run this program: through its apphost, or `dotnet QLoraBench.dll` when started that way.
    string self = Environment.ProcessPath!;
    var info = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
    if (Path.GetFileNameWithoutExtension(self) == "dotnet") info.ArgumentList.Add(Assembly.GetEntryAssembly()!.Location);
    foreach (var a in new[] { "memory", "--child", mode, "--layers", layers.ToString() }) info.ArgumentList.Add(a);
    using var process = Process.Start(info)!;
    string output = process.StandardOutput.ReadToEnd();
    process.WaitForExit();
    if (process.ExitCode != 0) throw new InvalidOperationException($"child {mode} failed with exit code {process.ExitCode}");
    return JsonDocument.Parse(output.Trim().Split('\n')[^1]).RootElement.Clone();
}

static int LoftQBench(int size, int rank, int iterations, double scaling)
{
    Console.WriteLine($"LoftQ on [{size}, {size}] weights, rank {rank}, scaling {scaling}, NF4 block 64: ‖W − (Q + s·B·A)‖_F");
    foreach (var row in QLoraBench.LoftQ(size, rank, scaling, iterations))
    {
        Console.WriteLine($"{row.Matrix}: ‖W‖ = {row.WeightNorm:F3}; QLoRA start (B = 0) {row.QLoraError:F4}");
        for (int t = 1; t <= row.LoftQErrors.Count; t++)
            Console.WriteLine($"  LoftQ {t} iteration(s): {row.LoftQErrors[t - 1]:F4}  ({100 * row.Reduction(t):F2}% lower)");
        Console.WriteLine($"  ({row.Seconds:F1} s)");
    }
    return 0;
}

static int Speed(int size)
{
    foreach (var dq in new[] { false, true })
    {
        var r = QLoraBench.QuantizeSpeed(size, size, new FourBitOptions(FourBitType.Nf4, 64, dq));
        Console.WriteLine($"[{size}, {size}] {r.Options}: quantize {r.QuantizeMs:F0} ms, dequantize float32 {r.DequantizeMs:F0} ms, bfloat16 {r.DequantizeBf16Ms:F0} ms (best of 5, {Environment.ProcessorCount} cores)");
    }
    return 0;
}

static int MergeBench(int size, int rank)
{
    Console.WriteLine($"[{size}, {size}] normal(0, 0.02) weight in NF4 + double quantization, rank-{rank} update ΔW merged and re-quantized (R) vs exact merge M");
    Console.WriteLine($"{"‖ΔW‖/‖W‖",10} {"max |R−M|",12} {"‖R−M‖/‖M‖",12} {"‖R−M‖/‖ΔW‖",12} {"update kept",12}");
    foreach (var r in QLoraBench.MergeRounding(size, rank))
        Console.WriteLine($"{r.UpdateRatio,10:G3} {r.MaxAbs,12:G4} {r.RelativeToMerged,12:G4} {r.RelativeToDelta,12:G4} {r.UpdateKept,12:P1}");
    return 0;
}
