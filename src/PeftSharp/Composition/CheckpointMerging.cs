using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tensors;
using static TorchSharp.torch;

namespace PeftSharp.Composition;

/// <summary>
/// Full-weight merging of fine-tuned checkpoints of one base, as mergekit's generalized task arithmetic does
/// (<c>merge_methods/generalized_task_arithmetic.py</c>): each model's task vector τᵢ = θᵢ − θ_base is sparsified
/// (ties: largest magnitudes; dare_*: random, survivors divided by the density), weighted by wᵢ, and for ties/dare_ties
/// only entries whose sign agrees with the sign of Σ wᵢτᵢ are kept; the result θ_base + Σ wᵢτᵢ·mask is divided by
/// the weights that contributed when <c>normalize</c> is on (mergekit's default for ties only).
/// </summary>
public static class CheckpointMerging
{
    /// <summary>mergekit's method names.</summary>
    public static IReadOnlyList<string> Methods { get; } = ["task_arithmetic", "ties", "dare_linear", "dare_ties"];

    /// <summary>
    /// How to merge: one weight per fine-tuned model; density (fraction kept) for ties and dare_*; normalize and
    /// rescale default to mergekit's per-method defaults (normalize: ties only; rescale: dare_* only).
    /// </summary>
    public sealed record Options(string Method, IReadOnlyList<double> Weights, double Density = 1.0, bool? Normalize = null, bool? Rescale = null, long? Seed = null)
    {
        /// <summary>
        /// Whether the merged task vector is divided by the weights that contributed: <see cref="Normalize"/> if set, otherwise true for <c>ties</c> only (mergekit's default).
        /// </summary>
        public bool NormalizeOrDefault => Normalize ?? Method == "ties";
        /// <summary>
        /// Whether DARE rescales kept values by 1/density: <see cref="Rescale"/> if set, otherwise true for the <c>dare_*</c> methods only.
        /// </summary>
        public bool RescaleOrDefault => Rescale ?? Method.StartsWith("dare", StringComparison.Ordinal);
        /// <summary>
        /// Whether the method elects a sign per element and drops disagreeing values (<c>ties</c> and <c>dare_ties</c>).
        /// </summary>
        public bool ElectsSign => Method is "ties" or "dare_ties";

        /// <summary>Checks the method name and that <see cref="Density"/> is in (0, 1].</summary>
        /// <exception cref="PeftSharpException">Unknown method or density out of range.</exception>
        public void Validate()
        {
            if (!Methods.Contains(Method)) throw new PeftSharpException($"merge method \"{Method}\" is not supported (expected {string.Join(", ", Methods)})");
            if (Density is not (> 0 and <= 1)) throw new PeftSharpException($"density must be in (0, 1], got {Density}");
        }
    }

    /// <summary>One merged tensor (float32 arithmetic; the result in the base's dtype).</summary>
    public static Tensor MergeTensor(Tensor baseTensor, IReadOnlyList<Tensor> finetuned, Options options, Generator? generator = null)
    {
        if (finetuned.Count != options.Weights.Count)
            throw new PeftSharpException($"merging: {options.Weights.Count} weight(s) for {finetuned.Count} fine-tuned model(s)");
        using var scope = NewDisposeScope();
        var baseF = baseTensor.to_type(ScalarType.Float32);
        var deltas = finetuned.Select(t => t.to_type(ScalarType.Float32).sub(baseF)).ToList();
        if (options.Method != "task_arithmetic")
            deltas = deltas.Select(d => TaskMerging.Prune(d, options.Density, random: options.Method.StartsWith("dare", StringComparison.Ordinal), generator, options.RescaleOrDefault)).ToList();
        var stacked = stack(deltas.ToArray());
        var shape = Enumerable.Repeat(1L, (int)stacked.dim()).ToArray();
        shape[0] = options.Weights.Count;
        var w = tensor(options.Weights.ToArray(), ScalarType.Float32).view(shape);
        var weighted = stacked.mul(w);
        Tensor mixed, divisor;
        if (options.ElectsSign)
        {
            // mergekit's "sum" consensus: the sign of the summed weighted deltas, zero counting as +.
            var majority = where(weighted.sum(0L).ge(0), 1.0f, -1.0f);
            var mask = weighted.sign().eq(majority).to_type(ScalarType.Float32);
            mixed = weighted.mul(mask).sum(0L);
            divisor = w.mul(mask).sum(0L);
            divisor = where(divisor.eq(0), ones_like(divisor), divisor);
        }
        else
        {
            mixed = weighted.sum(0L);
            double total = options.Weights.Sum();
            divisor = tensor(Math.Abs(total) < 1e-8 ? 1.0 : total, ScalarType.Float32);
        }
        if (options.NormalizeOrDefault) mixed = mixed.div(divisor);
        return baseF.add(mixed).to_type(baseTensor.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>What <see cref="MergeFolders"/> did.</summary>
    public sealed record Summary(int MergedTensors, int CopiedTensors, long Parameters);

    /// <summary>
    /// Merges the safetensors checkpoints in <paramref name="modelDirs"/> into <paramref name="baseDir"/>'s and writes a
    /// Hugging Face folder with the base's tensor names, dtypes, config and tokenizer files. Floating-point tensors are
    /// merged tensor by tensor; others are copied from the base. Every model must hold the base's tensors with the base's shapes.
    /// </summary>
    public static Summary MergeFolders(string baseDir, IReadOnlyList<string> modelDirs, Options options, string outDir)
    {
        options.Validate();
        if (modelDirs.Count == 0) throw new PeftSharpException("merging: give at least one fine-tuned model");
        if (modelDirs.Count != options.Weights.Count)
            throw new PeftSharpException($"--weights: {options.Weights.Count} weight(s) for {modelDirs.Count} fine-tuned model(s); give one per model");
        using var baseCkpt = SafetensorsCheckpoint.Open(baseDir);
        var models = new List<SafetensorsCheckpoint>();
        try
        {
            foreach (var dir in modelDirs) models.Add(SafetensorsCheckpoint.Open(dir));
            foreach (var (key, info) in baseCkpt.Tensors)
                for (int i = 0; i < models.Count; i++)
                {
                    if (!models[i].Tensors.TryGetValue(key, out var other))
                        throw new PeftSharpException($"{modelDirs[i]}: tensor '{key}' of the base is missing; models must be fine-tunes of the base");
                    if (!other.Shape.SequenceEqual(info.Shape))
                        throw new PeftSharpException($"{modelDirs[i]}: tensor '{key}' has shape [{string.Join(", ", other.Shape)}], the base's is [{string.Join(", ", info.Shape)}]");
                }
            using var generator = options.Seed is long seed ? new Generator((ulong)seed) : null;
            int merged = 0, copied = 0;
            long parameters = 0;
            var tensors = new List<KeyValuePair<string, Tensor>>();
            try
            {
                foreach (var (key, info) in baseCkpt.Tensors)
                {
                    using var scope = NewDisposeScope();
                    var baseTensor = baseCkpt.Read(key);
                    Tensor result;
                    if (ModelLoader.IsFloatingPoint(info.ScalarType))
                    {
                        result = MergeTensor(baseTensor, models.Select(m => m.Read(key)).ToList(), options, generator);
                        merged++;
                        parameters += baseTensor.numel();
                    }
                    else
                    {
                        result = baseTensor;
                        copied++;
                    }
                    tensors.Add(new(key, result.contiguous().DetachFromDisposeScope()));
                }
                var metadata = new Dictionary<string, string> { ["format"] = "pt" };
                AtomicDirectory.CreateNew(outDir, temp =>
                {
                    long bytes = tensors.Sum(t => t.Value.numel() * t.Value.ElementSize);
                    if (bytes > ModelSaver.MaxShardBytes) SafetensorsCheckpoint.SaveSharded(temp, tensors, ModelSaver.MaxShardBytes, metadata);
                    else SafetensorsWriter.Save(Path.Combine(temp, SafetensorsCheckpoint.SingleFileName), tensors, metadata);
                    ModelSaver.CopySideFiles(baseDir, temp);
                });
            }
            finally
            {
                foreach (var t in tensors) t.Value.Dispose();
            }
            return new Summary(merged, copied, parameters);
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }
}
