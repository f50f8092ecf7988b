using PeftSharp.Tensors;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter) exactly as torch.optim.AdamWOptimizer's single-tensor path computes it: decoupled weight
/// decay applied to the parameter first, then the bias-corrected Adam update:
/// <code>
/// p ← p·(1 − lr·wd);  m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²
/// p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
/// </code>
/// </summary>
/// <remarks>
/// Moments are float32 whatever the parameter's dtype. A parameter stored in another dtype (a bf16 model trained
/// in full) also gets a float32 master copy: the update is applied to the master and the parameter receives its
/// rounded value, so small updates are not lost to bf16 rounding. Adapters are float32 and need no master.
/// A parameter whose gradient is null is skipped entirely (no decay, no step count), as torch does.
/// </remarks>
public sealed class AdamWOptimizer : ITrainingOptimizer
{
    sealed class State
    {
        public required Tensor ExpAvg;
        public required Tensor ExpAvgSq;
        public Tensor? Master;
        public long Step;
    }

    readonly IReadOnlyList<ParameterGroup> _groups;
    readonly Dictionary<string, State> _state = new(StringComparer.Ordinal);

    /// <summary>
    /// AdamW over <paramref name="groups"/> (each with its own learning rate and weight decay), torch's defaults for β1, β2 and ε.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">β1 or β2 outside [0, 1), or ε negative.</exception>
    public AdamWOptimizer(IReadOnlyList<ParameterGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8)
    {
        if (beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "expected 0 ≤ β1 < 1");
        if (beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "expected 0 ≤ β2 < 1");
        if (epsilon < 0) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "expected ε ≥ 0");
        _groups = groups;
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        using var _ = no_grad();
        foreach (var (name, p) in ParameterGroups.All(groups))
        {
            if (!p.is_floating_point()) throw new ArgumentException($"parameter '{name}' has dtype {p.dtype}; only floating-point parameters can be trained");
            // State lives as long as the optimizer, whatever dispose scope the caller constructs it in.
            _state[name] = new State
            {
                ExpAvg = zeros(p.shape, ScalarType.Float32, p.device).DetachFromDisposeScope(),
                ExpAvgSq = zeros(p.shape, ScalarType.Float32, p.device).DetachFromDisposeScope(),
                Master = p.dtype == ScalarType.Float32 ? null : p.detach().to_type(ScalarType.Float32, copy: true).DetachFromDisposeScope(),
            };
        }
    }

    /// <summary>β1, the decay of the first-moment average (default 0.9).</summary>
    public double Beta1 { get; }
    /// <summary>β2, the decay of the second-moment average (default 0.999).</summary>
    public double Beta2 { get; }
    /// <summary>ε added to the denominator (default 1e-8).</summary>
    public double Epsilon { get; }
    /// <summary>The parameter groups.</summary>
    public IReadOnlyList<ParameterGroup> Groups => _groups;

    /// <summary>
    /// One update of every parameter that has a gradient, with learning rate <c>group.LearningRate × learningRateFactor</c>
    /// (the schedule's factor, as torch's LambdaLR multiplies the base rate).
    /// </summary>
    public void Step(double learningRateFactor = 1.0)
    {
        using var _ = no_grad();
        foreach (var group in _groups)
        {
            double lr = group.LearningRate * learningRateFactor;
            foreach (var (name, p) in group.Parameters)
            {
                using var scope = NewDisposeScope();
                var grad = p.grad;
                if (grad is null) continue;
                var s = _state[name];
                s.Step++;
                var target = s.Master ?? p;
                var g = grad.to_type(ScalarType.Float32);

                if (group.WeightDecay != 0) target.mul_(1 - lr * group.WeightDecay);
                s.ExpAvg.lerp_(g, tensor(1 - Beta1, ScalarType.Float32, g.device));
                s.ExpAvgSq.mul_(Beta2).addcmul_(g, g, 1 - Beta2);
                double biasCorrection1 = 1 - Math.Pow(Beta1, s.Step);
                double biasCorrection2Sqrt = Math.Sqrt(1 - Math.Pow(Beta2, s.Step));
                var denom = s.ExpAvgSq.sqrt().div_(biasCorrection2Sqrt).add_(Epsilon);
                target.addcdiv_(s.ExpAvg, denom, -lr / biasCorrection1);
                if (s.Master is not null) p.copy_(s.Master);
            }
        }
    }

    /// <summary>Drops every gradient (torch's <c>zero_grad(set_to_none=True)</c>), freeing its memory.</summary>
    public void ZeroGrad()
    {
        foreach (var group in _groups)
            foreach (var (_, p) in group.Parameters)
                p.grad = null;
    }

    /// <summary>Moments and float32 masters: 8 bytes per parameter, 12 for parameters kept with a master.</summary>
    public long StateBytes => _state.Values.Sum(s => s.ExpAvg.NumberOfElements * 4 + s.ExpAvgSq.NumberOfElements * 4 + (s.Master?.NumberOfElements ?? 0) * 4);

    /// <summary>Updates made so far to the parameter <paramref name="name"/>.</summary>
    public long StepCount(string name) => _state[name].Step;

    /// <summary>
    /// The state as named tensors: <c>{name}.exp_avg</c>, <c>{name}.exp_avg_sq</c>, <c>{name}.step</c> (int64 scalar),
    /// and <c>{name}.master</c> for parameters kept with a float32 master copy. The caller disposes the step scalars
    /// (the others are the optimizer's own tensors).
    /// </summary>
    public IEnumerable<KeyValuePair<string, Tensor>> StateTensors()
    {
        foreach (var (name, s) in _state)
        {
            yield return new($"{name}.exp_avg", s.ExpAvg);
            yield return new($"{name}.exp_avg_sq", s.ExpAvgSq);
            if (s.Master is not null) yield return new($"{name}.master", s.Master);
            yield return new($"{name}.step", tensor(s.Step));
        }
    }

    /// <summary>Writes the state to a safetensors file (atomically).</summary>
    public void Save(string path)
    {
        using var scope = NewDisposeScope();
        SafetensorsWriter.Save(path, StateTensors().ToList(), new Dictionary<string, string> { ["format"] = "peftsharp-adamw" });
    }

    /// <summary>Restores the state written by <see cref="Save"/>; every parameter's entries must be there with the right shapes.</summary>
    /// <exception cref="PeftSharpException">A missing tensor or a shape that does not match the parameter.</exception>
    public void Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        using var _ = no_grad();
        foreach (var (name, s) in _state)
        {
            ReadInto(file, $"{name}.exp_avg", s.ExpAvg);
            ReadInto(file, $"{name}.exp_avg_sq", s.ExpAvgSq);
            if (s.Master is not null) ReadInto(file, $"{name}.master", s.Master);
            using var step = ReadTensor(file, $"{name}.step");
            s.Step = step.to_type(ScalarType.Int64).item<long>();
        }
    }

    // SafetensorsFile.ReadInto checks the shape; the presence check adds why a tensor would be missing.
    static void ReadInto(SafetensorsFile file, string key, Tensor destination)
    {
        RequirePresent(file, key);
        file.ReadInto(key, destination);
    }

    static Tensor ReadTensor(SafetensorsFile file, string key)
    {
        RequirePresent(file, key);
        return file.Read(key);
    }

    static void RequirePresent(SafetensorsFile file, string key)
    {
        if (!file.Tensors.ContainsKey(key))
            throw new PeftSharpException($"{file.Path}: missing tensor '{key}' (the checkpoint was made with other trainable parameters)");
    }

    /// <summary>Disposes the moment tensors.</summary>
    public void Dispose()
    {
        foreach (var s in _state.Values)
        {
            s.ExpAvg.Dispose();
            s.ExpAvgSq.Dispose();
            s.Master?.Dispose();
        }
        _state.Clear();
    }
}
