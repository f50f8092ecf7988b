using PeftSharp.Training;
using PeftSharp.Training.GaLore;
using TorchSharp.Modules;
using static PeftSharp.Tests.Training.TrainingTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>
/// GaLore's AdamW against galore-torch's update written out in double-precision loops, with the projector found by
/// power iteration (not by torch's SVD); resuming from a saved state against an uninterrupted run.
/// </summary>
public class GaLoreTests
{
    const double B1 = 0.9, B2 = 0.999, Eps = 1e-8;

    /// <summary>galore-torch's AdamW for one matrix (or vector when <see cref="Rank"/> is 0), element by element.</summary>
    sealed class HandGaLore(double[,] w, int rank, long gap, double scale)
    {
        public readonly double[,] W = w;
        double[,]? m, v, p; // p: r×n (right) or m×r (left), as galore-torch stores it
        long step;
        int Rows => W.GetLength(0);
        int Cols => W.GetLength(1);
        bool Right => Rows >= Cols;

        public double[,]? Projector => p;

        public void Step(double[,] g, double lr, double wd, double[,]? alignTo)
        {
            double[,] low = g;
            if (rank > 0)
            {
                if (p is null || step % gap == 0) p = TopSingularVectors(g, rank, Right, alignTo);
                low = Right ? MatMul(g, Transpose(p)) : MatMul(Transpose(p), g);
            }
            m ??= new double[low.GetLength(0), low.GetLength(1)];
            v ??= new double[low.GetLength(0), low.GetLength(1)];
            step++;
            var n = new double[low.GetLength(0), low.GetLength(1)];
            for (int i = 0; i < low.GetLength(0); i++)
                for (int j = 0; j < low.GetLength(1); j++)
                {
                    m[i, j] = B1 * m[i, j] + (1 - B1) * low[i, j];
                    v[i, j] = B2 * v[i, j] + (1 - B2) * low[i, j] * low[i, j];
                    n[i, j] = m[i, j] / (Math.Sqrt(v[i, j]) + Eps);
                }
            var update = rank > 0 ? (Right ? MatMul(n, p!) : MatMul(p!, n)) : n;
            double s = rank > 0 ? scale : 1.0;
            double stepSize = lr * Math.Sqrt(1 - Math.Pow(B2, step)) / (1 - Math.Pow(B1, step));
            for (int i = 0; i < Rows; i++)
                for (int j = 0; j < Cols; j++)
                {
                    W[i, j] -= stepSize * s * update[i, j];
                    W[i, j] -= lr * wd * W[i, j];
                }
        }
    }

    /// <summary>
    /// Top-r right (r×n) or left (m×r) singular vectors by power iteration with deflation on GᵀG or GGᵀ. Singular vectors
    /// have arbitrary signs; each is flipped to agree with <paramref name="alignTo"/> (the library's) when given.
    /// </summary>
    static double[,] TopSingularVectors(double[,] g, int rank, bool right, double[,]? alignTo)
    {
        var gram = right ? MatMul(Transpose(g), g) : MatMul(g, Transpose(g));
        int d = gram.GetLength(0);
        rank = Math.Min(rank, Math.Min(g.GetLength(0), g.GetLength(1)));
        var vectors = new List<double[]>();
        var random = new Random(5);
        for (int k = 0; k < rank; k++)
        {
            var x = Enumerable.Range(0, d).Select(_ => random.NextDouble() - 0.5).ToArray();
            for (int iter = 0; iter < 3000; iter++)
            {
                var y = new double[d];
                for (int i = 0; i < d; i++) for (int j = 0; j < d; j++) y[i] += gram[i, j] * x[j];
                foreach (var u in vectors)
                {
                    double dot = Enumerable.Range(0, d).Sum(i => u[i] * y[i]);
                    for (int i = 0; i < d; i++) y[i] -= dot * u[i];
                }
                double norm = Math.Sqrt(y.Sum(e => e * e));
                x = y.Select(e => e / norm).ToArray();
            }
            if (alignTo is not null)
            {
                double dot = Enumerable.Range(0, d).Sum(i => x[i] * (right ? alignTo[k, i] : alignTo[i, k]));
                if (dot < 0) x = x.Select(e => -e).ToArray();
            }
            vectors.Add(x);
        }
        var p = right ? new double[rank, d] : new double[d, rank];
        for (int k = 0; k < rank; k++)
            for (int i = 0; i < d; i++)
                if (right) p[k, i] = vectors[k][i]; else p[i, k] = vectors[k][i];
        return p;
    }

    static double[,] MatMul(double[,] a, double[,] b)
    {
        var c = new double[a.GetLength(0), b.GetLength(1)];
        for (int i = 0; i < a.GetLength(0); i++)
            for (int j = 0; j < b.GetLength(1); j++)
                for (int k = 0; k < a.GetLength(1); k++) c[i, j] += a[i, k] * b[k, j];
        return c;
    }

    static double[,] Transpose(double[,] a)
    {
        var t = new double[a.GetLength(1), a.GetLength(0)];
        for (int i = 0; i < a.GetLength(0); i++) for (int j = 0; j < a.GetLength(1); j++) t[j, i] = a[i, j];
        return t;
    }

    static double[,] RandomMatrix(Random random, int rows, int cols, double spread = 1)
    {
        var a = new double[rows, cols];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) a[i, j] = (random.NextDouble() - 0.5) * spread;
        return a;
    }

    static Tensor ToTensor(double[,] a)
    {
        var flat = new float[a.Length];
        int c = a.GetLength(1);
        for (int i = 0; i < a.GetLength(0); i++) for (int j = 0; j < c; j++) flat[i * c + j] = (float)a[i, j];
        return tensor(flat, [a.GetLength(0), c]);
    }

    static double[,] ToArray(Tensor t)
    {
        var values = Values(t);
        int rows = (int)t.shape[0], cols = (int)t.shape[1];
        var a = new double[rows, cols];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) a[i, j] = values[i * cols + j];
        return a;
    }

    static void AssertClose(double[,] want, Tensor actual, double tolerance)
    {
        var got = ToArray(actual);
        for (int i = 0; i < want.GetLength(0); i++)
            for (int j = 0; j < want.GetLength(1); j++)
                Assert.True(Math.Abs(want[i, j] - got[i, j]) <= tolerance, $"[{i},{j}]: want {want[i, j]}, got {got[i, j]}");
    }

    [Fact]
    public void ProjectedAdamStepsMatchThePlainLoopReference()
    {
        const double lr = 0.01, wd = 0.1, scale = 0.25;
        const int rank = 2;
        const long gap = 2;
        var random = new Random(3);
        // Tall (m ≥ n: right projector), wide (left projector), and a bias vector without projection (as a 1×k matrix).
        var tall = RandomMatrix(random, 7, 5);
        var wide = RandomMatrix(random, 4, 6);
        var bias = RandomMatrix(random, 1, 5);
        var pTall = new Parameter(ToTensor(tall));
        var pWide = new Parameter(ToTensor(wide));
        var pBias = new Parameter(ToTensor(bias).reshape(5));
        var groups = new List<ParameterGroup> { new([("layer.attn.tall.weight", pTall), ("layer.mlp.wide.weight", pWide)], lr, wd), new([("layer.attn.tall.bias", pBias)], lr, 0) };
        var options = new GaLoreOptions { Rank = rank, UpdateProjGap = gap, Scale = scale };
        var projected = options.Select(groups.SelectMany(g => g.Parameters));
        Assert.Equal(["layer.attn.tall.weight", "layer.mlp.wide.weight"], projected.Order());
        using var optimizer = new GaLoreAdamW(groups, projected, options, B1, B2, Eps);
        var handTall = new HandGaLore((double[,])tall.Clone(), rank, gap, scale);
        var handWide = new HandGaLore((double[,])wide.Clone(), rank, gap, scale);
        var handBias = new HandGaLore((double[,])bias.Clone(), 0, gap, scale);
        for (int step = 0; step < 5; step++)
        {
            // Gradients with a clear spectrum (distinct singular values) so the top-r subspace is well defined.
            var gTall = RandomMatrix(random, 7, 5, spread: 1 + step);
            var gWide = RandomMatrix(random, 4, 6, spread: 0.5);
            var gBias = RandomMatrix(random, 1, 5);
            pTall.grad = ToTensor(gTall);
            pWide.grad = ToTensor(gWide);
            pBias.grad = ToTensor(gBias).reshape(5);
            optimizer.Step();
            optimizer.ZeroGrad();
            handTall.Step(gTall, lr, wd, ToArray(optimizer.Projector("layer.attn.tall.weight")!));
            handWide.Step(gWide, lr, wd, ToArray(optimizer.Projector("layer.mlp.wide.weight")!));
            handBias.Step(gBias, lr, 0, null);
            AssertClose(handTall.Projector!, optimizer.Projector("layer.attn.tall.weight")!, 1e-5);
            AssertClose(handWide.Projector!, optimizer.Projector("layer.mlp.wide.weight")!, 1e-5);
            AssertClose(handTall.W, pTall, 2e-6);
            AssertClose(handWide.W, pWide, 2e-6);
            AssertClose(handBias.W, pBias.reshape(1, 5), 2e-6);
        }
        Assert.Equal([2L, 5L], optimizer.Projector("layer.attn.tall.weight")!.shape);
        Assert.Equal([4L, 2L], optimizer.Projector("layer.mlp.wide.weight")!.shape);
        // State: tall 7×2 moments ×2 + 2×5 projector; wide 2×6 moments ×2 + 4×2 projector; bias 5 ×2; float32.
        Assert.Equal(4L * (2 * 14 + 10 + 2 * 12 + 8 + 2 * 5), optimizer.StateBytes);
    }

    [Fact]
    public void ResumingFromASavedStateEqualsTheUninterruptedRun()
    {
        var options = new GaLoreOptions { Rank = 2, UpdateProjGap = 3, Scale = 0.5 };
        var random = new Random(9);
        var start = RandomMatrix(random, 6, 4);
        var grads = Enumerable.Range(0, 7).Select(_ => RandomMatrix(random, 6, 4)).ToList();
        (GaLoreAdamW, Parameter) Make()
        {
            var p = new Parameter(ToTensor(start));
            var groups = new List<ParameterGroup> { new([("attn.weight", p)], 0.05, 0.01) };
            return (new GaLoreAdamW(groups, new HashSet<string> { "attn.weight" }, options), p);
        }
        var (straight, a) = Make();
        foreach (var g in grads) { a.grad = ToTensor(g); straight.Step(); straight.ZeroGrad(); }

        using var dir = new TempDir();
        var (first, b) = Make();
        foreach (var g in grads.Take(4)) { b.grad = ToTensor(g); first.Step(); first.ZeroGrad(); }
        first.Save(dir.File("opt.safetensors"));
        var saved = ToTensor(ToArray(b));
        first.Dispose();
        var (second, c) = Make();
        using (no_grad()) c.copy_(saved);
        second.Load(dir.File("opt.safetensors"));
        // The projector computed at step 3 is restored, not recomputed from step 4's gradient.
        foreach (var g in grads.Skip(4)) { c.grad = ToTensor(g); second.Step(); second.ZeroGrad(); }
        Assert.Equal(Values(a), Values(c));
        Assert.Equal(7, second.StepCount("attn.weight"));
        straight.Dispose();
        second.Dispose();
    }

    [Fact]
    public void TargetsAreTheAttentionAndMlpMatricesByDefault()
    {
        var options = new GaLoreOptions();
        Parameter Matrix() => new(zeros(3, 3));
        Assert.True(options.Targets("transformer.h.0.attn.c_attn.weight", Matrix()));
        Assert.True(options.Targets("model.layers.1.self_attn.q_proj.weight", Matrix()));
        Assert.True(options.Targets("model.layers.1.mlp.down_proj.weight", Matrix()));
        Assert.False(options.Targets("transformer.h.0.attn.c_attn.bias", new Parameter(zeros(3))));
        Assert.False(options.Targets("transformer.wte.weight", Matrix()));
        Assert.False(options.Targets("model.layers.0.input_layernorm.weight", new Parameter(zeros(3))));
    }
}
