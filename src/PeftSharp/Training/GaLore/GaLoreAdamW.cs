using PeftSharp.Tensors;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training.GaLore;

/// <summary>
/// galore-torch's <c>GaLoreAdamW</c>: AdamW whose moments, for the projected matrices, live in a rank-r space. For a
/// projected parameter with gradient G at step t (counted from 0):
/// <code>
/// if t mod update_proj_gap = 0:  P ← top-r singular vectors of G (right if m ≥ n, else left; see GaLoreProjector)
/// R ← G·Pᵀ (or Pᵀ·G);  m ← β1·m + (1−β1)·R;  v ← β2·v + (1−β2)·R²
/// N ← m / (√v + ε);  W ← W − lr·√(1−β2ᵗ⁺¹)/(1−β1ᵗ⁺¹) · scale · N·P (or P·N);  W ← W − lr·wd·W
/// </code>
/// Every other parameter gets the same update without projection (galore-torch puts them in the same optimizer, in a
/// group without "rank"). As in galore-torch, moments are kept when the projector changes, ε is added to √v before the
/// bias correction, and weight decay comes after the step. Moments and projectors are float32; a parameter that is not
/// float32 gets a float32 master copy, as <see cref="AdamWOptimizer"/> does.
/// </summary>
public sealed class GaLoreAdamW : ITrainingOptimizer
{
    sealed class State
    {
        public required Tensor ExpAvg;
        public required Tensor ExpAvgSq;
        public Tensor? Master;
        public Tensor? Projector;
        public bool Projected;
        public bool Right;
        public long Step;
    }

    readonly IReadOnlyList<ParameterGroup> _groups;
    readonly Dictionary<string, State> _state = new(StringComparer.Ordinal);

    /// <param name="groups">Every trained parameter, with its learning rate and weight decay.</param>
    /// <param name="projected">Names of the 2-D parameters whose gradients are projected (<see cref="GaLoreOptions.Select"/>).</param>
    public GaLoreAdamW(IReadOnlyList<ParameterGroup> groups, IReadOnlySet<string> projected, GaLoreOptions options,
                       double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8)
    {
        options.Validate();
        if (beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "expected 0 ≤ β1 < 1");
        if (beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "expected 0 ≤ β2 < 1");
        if (epsilon < 0) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "expected ε ≥ 0");
        _groups = groups;
        Options = options;
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        using var _ = no_grad();
        var all = ParameterGroups.All(groups);
        foreach (var name in projected)
            if (!all.Any(p => p.Name == name)) throw new ArgumentException($"projected parameter '{name}' is in no parameter group", nameof(projected));
        foreach (var (name, p) in all)
        {
            if (!p.is_floating_point()) throw new ArgumentException($"parameter '{name}' has dtype {p.dtype}; only floating-point parameters can be trained");
            bool project = projected.Contains(name);
            if (project && p.dim() != 2) throw new ArgumentException($"GaLore projects matrices only; '{name}' has {p.dim()} dimensions", nameof(projected));
            long[] shape = project ? GaLoreProjector.LowRankShape(p.shape[0], p.shape[1], options.Rank) : p.shape;
            _state[name] = new State
            {
                ExpAvg = zeros(shape, ScalarType.Float32, p.device).DetachFromDisposeScope(),
                ExpAvgSq = zeros(shape, ScalarType.Float32, p.device).DetachFromDisposeScope(),
                Master = p.dtype == ScalarType.Float32 ? null : p.detach().to_type(ScalarType.Float32, copy: true).DetachFromDisposeScope(),
                Projected = project,
                Right = project && GaLoreProjector.ProjectsRight(p.shape[0], p.shape[1]),
            };
        }
    }

    /// <summary>Rank, projector renewal gap, scale and targets.</summary>
    public GaLoreOptions Options { get; }
    /// <summary>Adam's β1 (first-moment decay).</summary>
    public double Beta1 { get; }
    /// <summary>Adam's β2 (second-moment decay).</summary>
    public double Beta2 { get; }
    /// <summary>Adam's ε, added to the root of the second moment.</summary>
    public double Epsilon { get; }
    /// <summary>The parameter groups (learning rate, weight decay).</summary>
    public IReadOnlyList<ParameterGroup> Groups => _groups;

    /// <summary>Names of the projected parameters.</summary>
    public IEnumerable<string> Projected => _state.Where(s => s.Value.Projected).Select(s => s.Key);

    /// <summary>The current projector of a projected parameter (null before its first step). The optimizer owns it.</summary>
    public Tensor? Projector(string name) => _state[name].Projector;

    /// <summary>Updates made so far to the parameter <paramref name="name"/>.</summary>
    public long StepCount(string name) => _state[name].Step;

    /// <summary>
    /// Low-rank moments, projectors (the size they have once computed, whether or not the first step was made) and masters.
    /// </summary>
    public long StateBytes => _groups.SelectMany(g => g.Parameters).Sum(p =>
    {
        var s = _state[p.Name];
        long elements = s.ExpAvg.NumberOfElements + s.ExpAvgSq.NumberOfElements + (s.Master?.NumberOfElements ?? 0);
        if (s.Projected) elements += GaLoreProjector.ProjectorShape(p.Param.shape[0], p.Param.shape[1], Options.Rank).Aggregate(1L, (a, b) => a * b);
        return elements * 4;
    });

    /// <summary>One optimizer step: projected Adam on the GaLore targets, plain AdamW on the rest; the learning rate is multiplied by <paramref name="learningRateFactor"/> (the schedule).</summary>
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
                var target = s.Master ?? p;
                var g = grad.to_type(ScalarType.Float32);
                if (s.Projected)
                {
                    if (s.Projector is null || s.Step % Options.UpdateProjGap == 0)
                    {
                        s.Projector?.Dispose();
                        s.Projector = GaLoreProjector.Compute(g, Options.Rank).DetachFromDisposeScope();
                    }
                    g = GaLoreProjector.Project(g, s.Projector);
                }
                s.Step++;
                s.ExpAvg.mul_(Beta1).add_(g, 1 - Beta1);
                s.ExpAvgSq.mul_(Beta2).addcmul_(g, g, 1 - Beta2);
                var normalized = s.ExpAvg / s.ExpAvgSq.sqrt().add_(Epsilon);
                if (s.Projected) normalized = GaLoreProjector.ProjectBack(normalized, s.Projector!, s.Right, Options.Scale);
                double stepSize = lr * Math.Sqrt(1 - Math.Pow(Beta2, s.Step)) / (1 - Math.Pow(Beta1, s.Step));
                target.add_(normalized, -stepSize);
                if (group.WeightDecay > 0) target.mul_(1 - lr * group.WeightDecay);
                if (s.Master is not null) p.copy_(s.Master);
            }
        }
    }

    /// <summary>Clears every parameter's gradient.</summary>
    public void ZeroGrad()
    {
        foreach (var group in _groups)
            foreach (var (_, p) in group.Parameters)
                p.grad = null;
    }

    /// <summary>
    /// Named tensors: <c>{name}.exp_avg</c>, <c>{name}.exp_avg_sq</c>, <c>{name}.step</c>, <c>{name}.master</c> when kept,
    /// and <c>{name}.projector</c> for projected parameters once computed. The caller disposes the step scalars.
    /// </summary>
    public IEnumerable<KeyValuePair<string, Tensor>> StateTensors()
    {
        foreach (var (name, s) in _state)
        {
            yield return new($"{name}.exp_avg", s.ExpAvg);
            yield return new($"{name}.exp_avg_sq", s.ExpAvgSq);
            if (s.Master is not null) yield return new($"{name}.master", s.Master);
            if (s.Projector is not null) yield return new($"{name}.projector", s.Projector);
            yield return new($"{name}.step", tensor(s.Step));
        }
    }

    /// <summary>Writes moments, step counts, float32 masters and projectors to <paramref name="path"/> (safetensors, atomically).</summary>
    public void Save(string path)
    {
        using var scope = NewDisposeScope();
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "peftsharp-galore-adamw",
            ["rank"] = Options.Rank.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["update_proj_gap"] = Options.UpdateProjGap.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["scale"] = Options.Scale.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            ["proj_type"] = "std",
        };
        SafetensorsWriter.Save(path, StateTensors().ToList(), metadata);
    }

    /// <exception cref="PeftSharpException">Another optimizer's file, other GaLore settings, a missing tensor or a shape that does not match.</exception>
    public void Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        var meta = file.Metadata;
        if (meta is null || !meta.TryGetValue("format", out var format) || format != "peftsharp-galore-adamw")
            throw new PeftSharpException($"{path}: not a GaLore optimizer state (the checkpoint was made with another --optimizer)");
        if (meta.GetValueOrDefault("rank") != Options.Rank.ToString(System.Globalization.CultureInfo.InvariantCulture))
            throw new PeftSharpException($"{path}: made with GaLore rank {meta.GetValueOrDefault("rank")}; resuming needs the same, got {Options.Rank}");
        using var _ = no_grad();
        foreach (var (name, s) in _state)
        {
            ReadInto(file, $"{name}.exp_avg", s.ExpAvg);
            ReadInto(file, $"{name}.exp_avg_sq", s.ExpAvgSq);
            if (s.Master is not null) ReadInto(file, $"{name}.master", s.Master);
            RequirePresent(file, $"{name}.step");
            using (var step = file.Read($"{name}.step")) s.Step = step.to_type(ScalarType.Int64).item<long>();
            s.Projector?.Dispose();
            s.Projector = null;
            if (s.Projected && file.Tensors.ContainsKey($"{name}.projector"))
            {
                var p = ParameterOf(name);
                var projector = zeros(GaLoreProjector.ProjectorShape(p.shape[0], p.shape[1], Options.Rank), ScalarType.Float32, p.device).DetachFromDisposeScope();
                file.ReadInto($"{name}.projector", projector);
                s.Projector = projector;
            }
            else if (s.Projected && s.Step > 0)
                throw new PeftSharpException($"{path}: missing tensor '{name}.projector' (the checkpoint was made with other GaLore targets)");
        }
    }

    Parameter ParameterOf(string name) => _groups.SelectMany(g => g.Parameters).First(p => p.Name == name).Param;

    static void ReadInto(SafetensorsFile file, string key, Tensor destination)
    {
        RequirePresent(file, key);
        file.ReadInto(key, destination);
    }

    static void RequirePresent(SafetensorsFile file, string key)
    {
        if (!file.Tensors.ContainsKey(key))
            throw new PeftSharpException($"{file.Path}: missing tensor '{key}' (the checkpoint was made with other trainable parameters or GaLore targets)");
    }

    /// <summary>Frees the optimizer state.</summary>
    public void Dispose()
    {
        foreach (var s in _state.Values)
        {
            s.ExpAvg.Dispose();
            s.ExpAvgSq.Dispose();
            s.Master?.Dispose();
            s.Projector?.Dispose();
        }
        _state.Clear();
    }
}
