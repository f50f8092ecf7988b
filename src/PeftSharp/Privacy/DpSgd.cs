using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Privacy;

/// <summary>DP-SGD's settings (Abadi et al. 2016), named as Opacus names them.</summary>
public sealed record DpSgdOptions
{
    /// <summary>C: each example's gradient is clipped to this L2 norm.</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>σ: the noise added to the sum of clipped gradients has standard deviation σ·C.</summary>
    public double NoiseMultiplier { get; init; } = 1.0;
    /// <summary>δ of the reported (ε, δ).</summary>
    public double Delta { get; init; } = 1e-5;
    /// <summary>Expected examples per step: Poisson sampling rate q = this / training examples.</summary>
    public int ExpectedBatchSize { get; init; } = 8;
    /// <summary>Examples per forward/backward (memory only; the gradient does not depend on it).</summary>
    public int MicroBatchSize { get; init; } = 8;
    /// <summary>Seeds the batch sampling (noise comes from torch's generator, which the trainer seeds and checkpoints).</summary>
    public ulong Seed { get; init; } = 42;

    /// <exception cref="PeftSharpException">A value out of range, named as the train flag.</exception>
    public void Validate()
    {
        if (!(MaxGradNorm > 0 && double.IsFinite(MaxGradNorm))) throw new PeftSharpException($"--dp-max-grad-norm: expected a positive number, got {MaxGradNorm}");
        if (!(NoiseMultiplier > 0 && double.IsFinite(NoiseMultiplier))) throw new PeftSharpException($"--dp-noise-multiplier: expected a positive number, got {NoiseMultiplier}");
        if (!(Delta > 0 && Delta < 1)) throw new PeftSharpException($"--dp-delta: expected a probability in (0, 1), got {Delta}");
        if (ExpectedBatchSize < 1) throw new PeftSharpException($"--batch-size: expected at least 1, got {ExpectedBatchSize}");
        if (MicroBatchSize < 1) throw new PeftSharpException($"--batch-size: expected at least 1, got {MicroBatchSize}");
    }
}

/// <summary>
/// DP-SGD's gradient for <see cref="Trainer.Gradients"/>: a Poisson-sampled batch, each example's gradient of its
/// own mean token loss computed in one batched pass (<see cref="PerExampleGradients"/>), clipped to C
/// (<see cref="PerExampleClipping"/>), summed, plus Gaussian noise N(0, σ²C²) per coordinate, divided by the expected
/// batch size (as Opacus does for Poisson sampling). The privacy spent after T steps is
/// <see cref="RdpAccountant.Epsilon(double, double, long, double, IReadOnlyList{double}?, RdpConversion)"/> of (q, σ, T, δ).
/// </summary>
public sealed class DpSgd : IStepGradients, IDisposable
{
    readonly CausalLM model;
    readonly IReadOnlyList<(string Name, Parameter Param)> trainable;
    readonly IReadOnlyList<TrainingExample> train;
    readonly long padTokenId;
    readonly PerExampleGradients perExample;

    /// <summary>
    /// DP-SGD over the trainable parameters <paramref name="trainable"/> of <paramref name="lora"/>; <paramref name="padTokenId"/> pads batches.
    /// </summary>
    /// <exception cref="PeftSharpException">Invalid options, no training examples, or an expected batch larger than the data.</exception>
    public DpSgd(CausalLM model, LoraModel lora, IReadOnlyList<(string Name, Parameter Param)> trainable,
                 IReadOnlyList<TrainingExample> train, long padTokenId, DpSgdOptions options)
    {
        options.Validate();
        if (train.Count == 0) throw new PeftSharpException("no training examples");
        if (options.ExpectedBatchSize > train.Count)
            throw new PeftSharpException($"DP-SGD: the expected batch size {options.ExpectedBatchSize} is larger than the {train.Count} training examples");
        this.model = model;
        this.trainable = trainable;
        this.train = train;
        this.padTokenId = padTokenId;
        Options = options;
        NoiseMultiplier = options.NoiseMultiplier;
        perExample = new PerExampleGradients(lora, trainable);
    }

    /// <summary>The clipping norm, batch size, δ and seed in use.</summary>
    public DpSgdOptions Options { get; }
    /// <summary>σ in use; set it before training (e.g. from <see cref="RdpAccountant.NoiseMultiplierFor"/>).</summary>
    public double NoiseMultiplier { get; set; }
    /// <summary>q = expected batch size / training examples.</summary>
    public double SampleRate => (double)Options.ExpectedBatchSize / train.Count;
    /// <summary>Fraction of the examples of the last step whose gradient norm exceeded C.</summary>
    public double LastClippedFraction { get; private set; }

    /// <summary>(ε, δ) after <paramref name="steps"/> steps, by the RDP accountant (improved conversion).</summary>
    public PrivacySpent Spent(long steps) => RdpAccountant.Epsilon(SampleRate, NoiseMultiplier, steps, Options.Delta);

    /// <summary>
    /// One DP-SGD step: a Poisson-sampled batch, per-example gradients clipped to norm C, summed, Gaussian noise σ·C added, divided by the expected batch size; the result is left in the parameters' <c>grad</c>.
    /// </summary>
    public StepGradient Compute(long step)
    {
        var batch = PoissonSampling.Batch(train.Count, SampleRate, Options.Seed, step);
        var sums = new Dictionary<Parameter, Tensor>(ReferenceEqualityComparer.Instance);
        double lossSum = 0;
        int lossCount = 0, clipped = 0;
        long tokens = 0;
        try
        {
            for (int start = 0; start < batch.Length; start += Options.MicroBatchSize)
            {
                using var scope = NewDisposeScope();
                var examples = batch.Skip(start).Take(Options.MicroBatchSize).Select(i => train[i]).ToList();
                var collated = Batch.Collate(examples, padTokenId, model.Device);
                tokens += collated.Tokens;
                if (collated.LabelledTokens == 0) continue;
                var hidden = model.Hidden(collated.InputIds, null, collated.ModelMask);
                foreach (var loss in PerExampleLoss.Backward(model, hidden, collated.Labels))
                    if (!double.IsNaN(loss)) { lossSum += loss; lossCount++; }
                var grads = perExample.Collect();
                if (grads.Count == 0) continue;
                var norms = PerExampleClipping.ClipAndAccumulate(grads, Options.MaxGradNorm, sums);
                clipped += norms.gt(Options.MaxGradNorm).sum().item<long>() is var c ? (int)c : 0;
            }
            using var _ = no_grad();
            double std = NoiseMultiplier * Options.MaxGradNorm;
            foreach (var (_, p) in trainable)
            {
                using var scope = NewDisposeScope();
                var sum = sums.TryGetValue(p, out var s) ? s : zeros(p.shape, ScalarType.Float32, p.device);
                var noisy = sum.add(randn(p.shape, ScalarType.Float32, p.device).mul_(std)).div_(Options.ExpectedBatchSize);
                p.grad = noisy.to_type(p.dtype);   // the parameter holds the storage; the scope frees this handle
            }
        }
        finally
        {
            perExample.Clear();
            foreach (var t in sums.Values) t.Dispose();
        }
        LastClippedFraction = batch.Length == 0 ? 0 : (double)clipped / batch.Length;
        return new StepGradient(lossCount > 0 ? lossSum / lossCount : double.NaN, tokens, batch.Length);
    }

    /// <summary>Releases the per-example gradient hooks.</summary>
    public void Dispose() => perExample.Dispose();
}
