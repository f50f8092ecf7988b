using PeftSharp.Tests.Tensors;
using PeftSharp.Training;
using TorchSharp.Modules;
using static PeftSharp.Tests.Training.TrainingTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>AdamW against the update written out by hand in double precision.</summary>
public class AdamWTests
{
    const double Lr = 0.01, Wd = 0.1, B1 = 0.9, B2 = 0.999, Eps = 1e-8;

    /// <summary>torch.optim.AdamW's formulas, one parameter element at a time.</summary>
    sealed class HandAdamW
    {
        public double P, M, V;
        public int T;
        public void Step(double g, double lr, double wd)
        {
            T++;
            P *= 1 - lr * wd;
            M = B1 * M + (1 - B1) * g;
            V = B2 * V + (1 - B2) * g * g;
            double mHat = M / (1 - Math.Pow(B1, T)), vHat = V / (1 - Math.Pow(B2, T));
            P -= lr * mHat / (Math.Sqrt(vHat) + Eps);
        }
    }

    [Fact]
    public void TwoStepsMatchTheHandComputedUpdate()
    {
        float[] start = [1.0f, -2.0f, 0.5f, 0.0f];
        float[][] grads = [[0.1f, -0.2f, 0.3f, 1e-4f], [-0.05f, 0.4f, 0.3f, -2f]];
        var p = new Parameter(tensor(start));
        using var optimizer = new AdamWOptimizer([new ParameterGroup([("p", p)], Lr, Wd)]);
        var hand = start.Select(x => new HandAdamW { P = x }).ToArray();
        foreach (var g in grads)
        {
            p.grad = tensor(g);
            optimizer.Step();
            optimizer.ZeroGrad();
            Assert.Null(p.grad);
            for (int i = 0; i < hand.Length; i++) hand[i].Step(g[i], Lr, Wd);
            var actual = Values(p);
            for (int i = 0; i < hand.Length; i++) Assert.Equal(hand[i].P, actual[i], 1e-6);
            // Sanity of the hand formula itself: the first step moves each element by lr·sign(g) after the decay.
            if (hand[0].T == 1) Assert.Equal(1.0 * (1 - Lr * Wd) - Lr, hand[0].P, 1e-6);
        }
        Assert.Equal(2, optimizer.StepCount("p"));
    }

    [Fact]
    public void LearningRateFactorScalesTheGroupRate()
    {
        var p = new Parameter(tensor(new[] { 1.0f }));
        using var optimizer = new AdamWOptimizer([new ParameterGroup([("p", p)], 0.1, 0.0)]);
        p.grad = tensor(new[] { 0.5f });
        optimizer.Step(learningRateFactor: 0.25);
        var hand = new HandAdamW { P = 1.0 };
        hand.Step(0.5, 0.025, 0.0);
        Assert.Equal(hand.P, Values(p)[0], 1e-6);
    }

    [Fact]
    public void ParametersWithoutGradientAreLeftAlone()
    {
        var a = new Parameter(tensor(new[] { 1.0f, 2.0f }));
        var b = new Parameter(tensor(new[] { 3.0f }));
        using var optimizer = new AdamWOptimizer([new ParameterGroup([("a", a), ("b", b)], Lr, Wd)]);
        a.grad = tensor(new[] { 1.0f, 1.0f });
        optimizer.Step();
        Assert.Equal([3.0f], Values(b)); // no decay either, as torch skips grad-less parameters
        Assert.Equal(0, optimizer.StepCount("b"));
        Assert.Equal(1, optimizer.StepCount("a"));
    }

    [Fact]
    public void Bf16ParameterIsUpdatedThroughAFloat32Master()
    {
        // 1 + 1e-3 is not representable in bf16 (spacing 2^-7 near 1): a bf16-only update would be lost.
        var p = new Parameter(ones(4, dtype: ScalarType.BFloat16));
        using var optimizer = new AdamWOptimizer([new ParameterGroup([("p", p)], 1e-3, 0.0)]);
        var hand = new HandAdamW { P = 1.0 };
        for (int step = 0; step < 8; step++)
        {
            p.grad = full(4, -1.0, ScalarType.BFloat16);
            optimizer.Step();
            hand.Step(-1.0, 1e-3, 0.0);
        }
        var master = Values(optimizer.StateTensors().Single(t => t.Key == "p.master").Value);
        Assert.All(master, m => Assert.Equal(hand.P, m, 1e-6));
        Assert.Equal(ScalarType.BFloat16, p.dtype);
        using var rounded = tensor((float)hand.P).to_type(ScalarType.BFloat16);
        Assert.All(Values(p), v => Assert.Equal(Values(rounded)[0], v));
        Assert.True(Values(p)[0] > 1.0f); // eight 1e-3 steps add up to a change bf16 can show
    }

    [Fact]
    public void StateSurvivesSaveAndLoad()
    {
        using var folder = new TempDir();
        var p = new Parameter(tensor(new[] { 1.0f, -1.0f }));
        var q = new Parameter(ones(2, 2, dtype: ScalarType.BFloat16));
        var groups = new[] { new ParameterGroup([("p", p), ("q", q)], Lr, Wd) };
        using var first = new AdamWOptimizer(groups);
        p.grad = tensor(new[] { 0.3f, 0.1f });
        q.grad = ones(2, 2, dtype: ScalarType.BFloat16);
        first.Step();
        first.Save(folder.File("opt.safetensors"));
        using var second = new AdamWOptimizer(groups);
        second.Load(folder.File("opt.safetensors"));
        Assert.Equal(1, second.StepCount("p"));
        var saved = first.StateTensors().Where(t => !t.Key.EndsWith(".step")).ToDictionary(t => t.Key, t => Values(t.Value));
        var loaded = second.StateTensors().Where(t => !t.Key.EndsWith(".step")).ToDictionary(t => t.Key, t => Values(t.Value));
        Assert.Equal(new[] { "p.exp_avg", "p.exp_avg_sq", "q.exp_avg", "q.exp_avg_sq", "q.master" }, saved.Keys.Order());
        foreach (var key in saved.Keys) Assert.Equal(saved[key], loaded[key]);
    }

    [Fact]
    public void LoadNamesTheMissingTensor()
    {
        using var folder = new TempDir();
        var p = new Parameter(tensor(new[] { 1.0f }));
        using (var one = new AdamWOptimizer([new ParameterGroup([("p", p)], Lr, Wd)])) one.Save(folder.File("opt.safetensors"));
        var r = new Parameter(tensor(new[] { 1.0f }));
        using var other = new AdamWOptimizer([new ParameterGroup([("r", r)], Lr, Wd)]);
        var e = Assert.Throws<PeftSharpException>(() => other.Load(folder.File("opt.safetensors")));
        Assert.Contains("'r.exp_avg'", e.Message);
        Assert.Contains("opt.safetensors", e.Message);
    }

    [Fact]
    public void DecaySplitPutsMatricesInTheDecayGroup()
    {
        var w = new Parameter(zeros(3, 2));
        var b = new Parameter(zeros(3));
        var e = new Parameter(zeros(5, 2));
        var groups = ParameterGroups.DecayAndNoDecay([("w", w), ("b", b), ("e", e)], 1e-4, 0.01);
        Assert.Equal(2, groups.Count);
        Assert.Equal(["w", "e"], groups[0].Parameters.Select(p => p.Name));
        Assert.Equal(0.01, groups[0].WeightDecay);
        Assert.Equal(["b"], groups[1].Parameters.Select(p => p.Name));
        Assert.Equal(0.0, groups[1].WeightDecay);
        Assert.All(groups, g => Assert.Equal(1e-4, g.LearningRate));
        Assert.Single(ParameterGroups.DecayAndNoDecay([("b", b)], 1e-4, 0.01));
    }

    [Fact]
    public void DuplicateNamesAreRejected()
    {
        var w = new Parameter(zeros(2));
        Assert.Throws<ArgumentException>(() => { using var _ = new AdamWOptimizer([new ParameterGroup([("w", w)], 1, 0), new ParameterGroup([("w", w)], 1, 0)]); });
    }
}

public class GradientClippingTests
{
    [Fact]
    public void ClipsToTheGlobalNorm()
    {
        var a = new Parameter(zeros(2));
        var b = new Parameter(zeros(1));
        var c = new Parameter(zeros(1)); // no gradient: ignored
        a.grad = tensor(new[] { 3.0f, 4.0f });
        b.grad = tensor(new[] { 12.0f });
        double norm = GradientClipping.ClipGradNorm([a, b, c], 1.0);
        Assert.Equal(13.0, norm, 1e-5);
        double scale = 1.0 / (13.0 + 1e-6);
        Assert.Equal(new[] { 3 * scale, 4 * scale }, Values(a.grad!).Select(x => (double)x), new Tolerance(1e-7));
        Assert.Equal(12 * scale, Values(b.grad!)[0], 1e-6);
        Assert.Null(c.grad);
    }

    [Fact]
    public void SmallGradientsAndDisabledClippingAreUntouched()
    {
        var a = new Parameter(zeros(2));
        a.grad = tensor(new[] { 0.3f, 0.4f });
        Assert.Equal(0.5, GradientClipping.ClipGradNorm([a], 1.0), 1e-6);
        Assert.Equal([0.3f, 0.4f], Values(a.grad!));
        a.grad = tensor(new[] { 30f, 40f });
        Assert.Equal(50, GradientClipping.ClipGradNorm([a], 0.0), 1e-4);
        Assert.Equal([30f, 40f], Values(a.grad!));
    }

    sealed class Tolerance(double eps) : IEqualityComparer<double>
    {
        public bool Equals(double x, double y) => Math.Abs(x - y) <= eps;
        public int GetHashCode(double obj) => 0;
    }
}

public class LearningRateScheduleTests
{
    [Fact]
    public void WarmupRisesLinearlyFromZero()
    {
        foreach (var kind in Enum.GetValues<ScheduleKind>())
        {
            var s = new LearningRateSchedule(kind, WarmupSteps: 4, TotalSteps: 20);
            Assert.Equal([0.0, 0.25, 0.5, 0.75], Enumerable.Range(0, 4).Select(i => s.Factor(i)));
            Assert.Equal(1.0, s.Factor(4), 12);
        }
    }

    [Fact]
    public void ShapesAfterWarmupFollowTransformersFormulas()
    {
        long warm = 4, total = 20;
        var constant = new LearningRateSchedule(ScheduleKind.Constant, warm, total);
        var linear = new LearningRateSchedule(ScheduleKind.Linear, warm, total);
        var cosine = new LearningRateSchedule(ScheduleKind.Cosine, warm, total);
        for (long step = warm; step <= total + 2; step++)
        {
            double progress = (double)(step - warm) / (total - warm);
            Assert.Equal(1.0, constant.Factor(step));
            Assert.Equal(Math.Max(0, (double)(total - step) / (total - warm)), linear.Factor(step), 12);
            Assert.Equal(Math.Max(0, 0.5 * (1 + Math.Cos(Math.PI * progress))), cosine.Factor(step), 12);
        }
        Assert.Equal(0.5, linear.Factor(12), 12);
        Assert.Equal(0.5, cosine.Factor(12), 12);
        Assert.Equal(0.0, linear.Factor(total));
    }

    [Fact]
    public void NoWarmupStartsAtTheFullRate()
    {
        Assert.Equal(1.0, new LearningRateSchedule(ScheduleKind.Linear, 0, 10).Factor(0));
        Assert.Equal(0.9, new LearningRateSchedule(ScheduleKind.Linear, 0, 10).Factor(1), 12);
        Assert.Equal(3, LearningRateSchedule.WarmupFromRatio(0.1, 25)); // ceil(2.5)
        Assert.Equal(ScheduleKind.Cosine, LearningRateSchedule.Parse("Cosine"));
        Assert.Throws<PeftSharpException>(() => LearningRateSchedule.Parse("exponential"));
    }
}
