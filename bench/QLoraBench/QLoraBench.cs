using System.Diagnostics;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

using PeftSharp.Quantization;

namespace PeftSharp.Bench;

/// <summary>
/// Measurements for QLoRA, as library calls (bench/QLoraBench runs them from the command line; see docs/qlora.md):
/// quantization speed, LoftQ's error reduction, and the resident memory of a 4-bit versus a bfloat16 model.
/// </summary>
public static class QLoraBench
{
    public sealed record SpeedResult(long Rows, long Cols, FourBitOptions Options, double QuantizeMs, double DequantizeMs, double DequantizeBf16Ms);

    /// <summary>Best-of-<paramref name="repeats"/> wall time to quantize and dequantize one [rows, cols] float32 matrix.</summary>
    public static SpeedResult QuantizeSpeed(long rows = 2048, long cols = 2048, FourBitOptions? options = null, int repeats = 5)
    {
        options ??= new FourBitOptions(DoubleQuant: true);
        using var w = randn(rows, cols).mul_(0.02);
        double quantize = double.MaxValue, dequantize = double.MaxValue, bf16 = double.MaxValue;
        for (int i = 0; i < repeats; i++)
        {
            var clock = Stopwatch.StartNew();
            using var q = Quantized4BitWeight.Quantize(w, options);
            quantize = Math.Min(quantize, clock.Elapsed.TotalMilliseconds);
            clock.Restart();
            using (q.Dequantize()) dequantize = Math.Min(dequantize, clock.Elapsed.TotalMilliseconds);
            clock.Restart();
            using (q.Dequantize(ScalarType.BFloat16)) bf16 = Math.Min(bf16, clock.Elapsed.TotalMilliseconds);
        }
        return new SpeedResult(rows, cols, options, quantize, dequantize, bf16);
    }

    /// <summary>One matrix's LoftQ measurement: QLoRA's start error and LoftQ's after each iteration (Frobenius norms).</summary>
    public sealed record LoftQRow(string Matrix, long Rows, long Cols, int Rank, double Scaling, double WeightNorm, double QLoraError,
                                  IReadOnlyList<double> LoftQErrors, double Seconds)
    {
        /// <summary>1 − error / QLoRA's error after <paramref name="iterations"/> iterations.</summary>
        public double Reduction(int iterations) => 1 - LoftQErrors[iterations - 1] / QLoraError;
    }

    /// <summary>
    /// ‖W − (dequant(Q) + s·B·A)‖_F for QLoRA's start (Q = quant(W), B = 0) and for LoftQ after 1..<paramref name="iterations"/>
    /// iterations, on two synthetic [size, size] weights: i.i.d. normal (std 0.02, no low-rank structure: LoftQ's worst
    /// case) and the same noise plus a rank-64 part whose singular values decay as 1/i from ten times the noise's largest
    /// (about a quarter of the energy; trained weights have such dominant directions, though no synthetic matrix is one).
    /// NF4, block 64, no double quantization, as PEFT's LoftQ.
    /// </summary>
    public static IReadOnlyList<LoftQRow> LoftQ(int size = 2048, int rank = 16, double scaling = 1.0, int iterations = 5, long seed = 0)
    {
        var rows = new List<LoftQRow>();
        using var gen = new Generator((ulong)seed);
        using var noise = randn([size, size], generator: gen).mul_(0.02);
        using var structured = StructuredPart(size, 64, gen).add_(noise);
        foreach (var (name, w) in new[] { ("normal(0, 0.02)", noise), ("normal + rank-64 part (σ_i = 10·σ_noise / i)", structured) })
        {
            var clock = Stopwatch.StartNew();
            double start = Quantization.LoftQ.QLoraStartError(w);
            using var result = Quantization.LoftQ.Initialize(w, rank, scaling, iterations);
            double norm = linalg.norm(w).item<float>();
            rows.Add(new LoftQRow(name, size, size, rank, scaling, norm, start, result.Errors, clock.Elapsed.TotalSeconds));
        }
        return rows;
    }

    /// <summary>U·diag(σ)·Vᵀ with orthonormal U, V and σ_i = σ_1 / i, σ_1 ten times the noise's largest singular value.</summary>
    static Tensor StructuredPart(int size, int rank, Generator gen)
    {
        using var scope = NewDisposeScope();
        var (u, _) = linalg.qr(randn([size, rank], generator: gen));
        var (v, _) = linalg.qr(randn([size, rank], generator: gen));
        // The noise's largest singular value is about 0.02·2√size.
        double top = 10 * 0.02 * 2 * Math.Sqrt(size);
        var sigma = tensor(Enumerable.Range(1, rank).Select(i => (float)(top / i)).ToArray());
        return u.mul(sigma.unsqueeze(0)).matmul(v.t()).MoveToOuterDisposeScope();
    }

    /// <summary>Re-quantizing a merged 4-bit layer, for one size of update: errors against the exact merge M = dequant(Q) + ΔW.</summary>
    public sealed record MergeRow(double UpdateRatio, double MaxAbs, double RelativeToMerged, double RelativeToDelta, double UpdateKept);

    /// <summary>
    /// A [size, size] normal(0, 0.02) weight quantized (NF4 + double quantization), plus a rank-<paramref name="rank"/>
    /// update ΔW scaled to ‖ΔW‖_F = ratio·‖W‖_F, merged and re-quantized: max |R − M|, ‖R − M‖/‖M‖, ‖R − M‖/‖ΔW‖ and
    /// the part of the update the re-quantized weight still carries, ⟨R − dequant(Q), ΔW⟩ / ‖ΔW‖².
    /// </summary>
    public static IReadOnlyList<MergeRow> MergeRounding(int size = 2048, int rank = 16, double[]? ratios = null, long seed = 0)
    {
        ratios ??= [0.001, 0.01, 0.1];
        var options = new FourBitOptions(FourBitType.Nf4, 64, DoubleQuant: true);
        using var _ = no_grad();
        using var gen = new Generator((ulong)seed);
        using var scope = NewDisposeScope();
        var w = randn([size, size], generator: gen).mul_(0.02);
        using var q = Quantized4BitWeight.Quantize(w, options);
        var baseW = q.Dequantize();
        var direction = randn([size, rank], generator: gen).matmul(randn([rank, size], generator: gen));
        direction = direction.div(linalg.norm(direction));
        double wNorm = linalg.norm(w).item<float>();
        var rows = new List<MergeRow>();
        foreach (var ratio in ratios)
        {
            using var inner = NewDisposeScope();
            var delta = direction.mul(ratio * wNorm);
            var merged = baseW.add(delta);
            using var r = Quantized4BitWeight.Quantize(merged, options);
            var written = r.Dequantize();
            var error = written.sub(merged);
            double e = linalg.norm(error).item<float>(), d = linalg.norm(delta).item<float>();
            double kept = written.sub(baseW).mul(delta).sum().item<float>() / (d * d);
            rows.Add(new MergeRow(ratio, error.abs().max().item<float>(), e / linalg.norm(merged).item<float>(), e / d, kept));
        }
        return rows;
    }

    /// <summary>Resident and peak resident set size of this process (Linux /proc/self/status VmRSS, VmHWM), or null elsewhere.</summary>
    public static (long Rss, long Peak)? ProcessMemory()
    {
        const string path = "/proc/self/status";
        if (!File.Exists(path)) return null;
        long rss = -1, hwm = -1;
        foreach (var line in File.ReadLines(path))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = KiB(line);
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = KiB(line);
        }
        return rss < 0 || hwm < 0 ? null : (rss * 1024, hwm * 1024);

        static long KiB(string line) => long.Parse(line.Split(':', 2)[1].Trim().Split(' ')[0]);
    }

    public sealed record MemoryResult(string Mode, long RssBefore, long RssAfter, long PeakAfter, long WeightBytes, long Parameters, double Seconds)
    {
        /// <summary>What the model added to the resident set.</summary>
        public long RssDelta => RssAfter - RssBefore;
        /// <summary>How far the resident set rose above its level before the model, at its highest.</summary>
        public long PeakDelta => PeakAfter - RssBefore;
    }

    /// <summary>
    /// Builds a random model of <paramref name="config"/> in this process (bfloat16, or with 4-bit linear layers when
    /// <paramref name="quantization"/> is given, layer by layer) and reports resident memory before and after. Run
    /// each mode in a fresh process: VmHWM never goes down, and freed memory may stay resident.
    /// </summary>
    public static MemoryResult MeasureRandomLoad(ModelConfig config, BitsAndBytesConfig? quantization, ScalarType dtype = ScalarType.BFloat16, long seed = 0)
    {
        // Load libtorch and its kernels (and the quantizer's code paths) before the baseline.
        using (var warm = randn(256, 256).to_type(dtype))
        using (var q = Quantized4BitWeight.Quantize(warm, new FourBitOptions(DoubleQuant: true)))
        using (q.Dequantize(dtype)) { }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var before = ProcessMemory() ?? throw new PlatformNotSupportedException("resident memory is read from /proc/self/status (Linux only)");
        var clock = Stopwatch.StartNew();
        using var model = QuantizedModelLoader.CreateRandom(config, dtype, CPU, quantization, seed);
        double seconds = clock.Elapsed.TotalSeconds;
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var after = ProcessMemory()!.Value;
        string mode = quantization is null ? ModelLoader.DTypeName(dtype)
            : $"{quantization.Options}{(quantization.Skips("lm_head") ? "" : ", lm_head quantized too")}";
        long parameters = model.parameters().Sum(QuantizedModels.PeftParameterCount);
        return new MemoryResult(mode, before.Rss, after.Rss, after.Peak, QuantizedModels.WeightBytes(model), parameters, seconds);
    }

    /// <summary>TinyLlama-1.1B's config.json (hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 key-value heads, vocab 32000).</summary>
    public static ModelConfig TinyLlamaConfig(int? layers = null) => ModelConfig.FromJson($$"""
        {
          "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
          "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": {{layers ?? 22}},
          "num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 2048,
          "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false, "vocab_size": 32000,
          "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"
        }
        """);
}
