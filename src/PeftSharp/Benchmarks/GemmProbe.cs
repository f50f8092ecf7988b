using System.Diagnostics;
using static TorchSharp.torch;

namespace PeftSharp.Benchmarks;

/// <summary>
/// This machine's best matrix-multiply rate for a dtype, measured now, so benchmark figures can be reported as
/// ratios (MFU = achieved / measured peak) that hold on a noisy shared machine.
/// </summary>
public static class GemmProbe
{
    /// <summary>Best GFLOP/s over a few square and GPT-2-shaped products (2·m·n·k FLOPs each).</summary>
    public static double MeasureGflops(ScalarType dtype, Device? device = null, double seconds = 3.0)
    {
        device ??= CPU;
        // Shapes like one transformer layer at batch 4 × 512 (rows 2048), plus a square one.
        (long M, long K, long N)[] shapes = [(2048, 768, 3072), (2048, 3072, 768), (2048, 768, 2304), (1024, 1024, 1024)];
        double best = 0;
        var clock = Stopwatch.StartNew();
        using var _ = no_grad();
        foreach (var (m, k, n) in shapes)
        {
            using var scope = NewDisposeScope();
            var a = randn([m, k], dtype, device);
            var b = randn([k, n], dtype, device);
            a.matmul(b); // warm-up
            double budget = seconds / shapes.Length;
            var t = Stopwatch.StartNew();
            int reps = 0;
            double fastest = double.MaxValue;
            while (t.Elapsed.TotalSeconds < budget || reps < 3)
            {
                var one = Stopwatch.StartNew();
                using var c = a.matmul(b);
                if (device.type != TorchSharp.DeviceType.CPU) cuda.synchronize();
                fastest = Math.Min(fastest, one.Elapsed.TotalSeconds);
                reps++;
            }
            best = Math.Max(best, 2.0 * m * k * n / fastest / 1e9);
        }
        return best;
    }
}
