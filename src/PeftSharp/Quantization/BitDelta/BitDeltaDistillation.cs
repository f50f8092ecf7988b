using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization.BitDelta;

/// <summary>
/// BitDelta's scale distillation: the per-matrix scales are fitted so that the compressed model's logits match the
/// fine-tuned model's on calibration text, minimising the mean squared error of the logits with AdamW (lr 1e-4,
/// β = (0.9, 0.999), weight decay 0.01 as torch's defaults) under a cosine schedule, as the reference code does.
/// Only the scales are trained (the reference code also trains the tensors kept whole; the paper distils the scales).
/// </summary>
public static class BitDeltaDistillation
{
    /// <summary>Scale distillation settings.</summary>
    /// <param name="Steps">Optimizer steps (default 100).</param>
    /// <param name="LearningRate">AdamW learning rate of the scales (default 1e-4).</param>
    /// <param name="WeightDecay">AdamW weight decay (default 0.01).</param>
    public sealed record Options(int Steps = 100, double LearningRate = 1e-4, double WeightDecay = 0.01);

    /// <summary>
    /// Fits <paramref name="delta"/>'s scales in place. <paramref name="student"/> is the fine-tuned model's folder
    /// loaded as a model (its whole tensors are the delta's), <paramref name="baseWeights"/> the base's compressed
    /// weights by name, <paramref name="batches"/> token-id batches [B, T] of calibration text (cycled).
    /// Returns the logits MSE per step.
    /// </summary>
    public static IReadOnlyList<double> Distill(BitDelta delta, CausalLM student, CausalLM teacher, IReadOnlyDictionary<string, Tensor> baseWeights,
                                                IReadOnlyList<Tensor> batches, Options options, Action<int, double>? onStep = null)
    {
        if (options.Steps < 1) throw new PeftSharpException($"--steps: expected a whole number ≥ 1, got {options.Steps}");
        if (batches.Count == 0) throw new PeftSharpException("--calibration: no text to distil on");
        var parameters = student.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var p in parameters.Values) p.requires_grad = false;
        var signs = new Dictionary<string, Tensor>();
        var losses = new List<double>();
        double[] m = new double[delta.Entries.Count], v = new double[delta.Entries.Count];
        const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
        try
        {
            foreach (var e in delta.Entries)
            {
                signs[e.Name] = BitDelta.UnpackSigns(e, ScalarType.Float32, student.Device);
                parameters[e.Name].requires_grad = true;
            }
            student.train(false);
            teacher.eval();
            for (int step = 0; step < options.Steps; step++)
            {
                using var scope = NewDisposeScope();
                using (no_grad())
                    foreach (var e in delta.Entries)
                        parameters[e.Name].copy_(baseWeights[e.Name].to_type(ScalarType.Float32).add(signs[e.Name].mul(e.Scale)));
                var ids = batches[step % batches.Count];
                Tensor target;
                using (no_grad()) target = teacher.Forward(ids).to_type(ScalarType.Float32);
                var loss = nn.functional.mse_loss(student.Forward(ids).to_type(ScalarType.Float32), target);
                foreach (var e in delta.Entries) parameters[e.Name].grad?.zero_();
                loss.backward();
                double lr = options.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * step / options.Steps)); // CosineAnnealingLR, eta_min 0
                for (int i = 0; i < delta.Entries.Count; i++)
                {
                    var e = delta.Entries[i];
                    var grad = parameters[e.Name].grad;
                    double g = grad is null ? 0 : grad.to_type(ScalarType.Float32).mul(signs[e.Name]).sum().item<float>();
                    // AdamW, as torch.optim.AdamW: decoupled decay, then the bias-corrected Adam step.
                    e.Scale *= 1 - lr * options.WeightDecay;
                    m[i] = beta1 * m[i] + (1 - beta1) * g;
                    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
                    double mHat = m[i] / (1 - Math.Pow(beta1, step + 1)), vHat = v[i] / (1 - Math.Pow(beta2, step + 1));
                    e.Scale -= lr * mHat / (Math.Sqrt(vHat) + eps);
                }
                double value = loss.item<float>();
                losses.Add(value);
                onStep?.Invoke(step, value);
            }
            using (no_grad())
                foreach (var e in delta.Entries)
                    parameters[e.Name].copy_(baseWeights[e.Name].to_type(ScalarType.Float32).add(signs[e.Name].mul(e.Scale)));
            return losses;
        }
        finally
        {
            foreach (var s in signs.Values) s.Dispose();
            foreach (var p in parameters.Values) p.requires_grad = false;
        }
    }
}
