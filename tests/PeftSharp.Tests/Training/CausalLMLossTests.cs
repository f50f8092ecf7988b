using PeftSharp.Models;
using PeftSharp.Training;
using static PeftSharp.Tests.Training.TrainingTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>The chunked loss against a plain loop over the model's own logits, and its gradients against plain autograd.</summary>
public class CausalLMLossTests
{
    const long X = CausalLMLoss.IgnoreIndex;

    static readonly long[,] Ids = { { 5, 17, 3, 44, 9, 21, 0, 13, 7 }, { 60, 2, 2, 31, 8, 11, 39, 6, 50 } };
    // Row 0: prompt (first 3 labels ignored) and two padded positions at the end; row 1: all labelled.
    static readonly long[,] Labels = { { X, X, X, 44, 9, 21, 0, X, X }, { 60, 2, 2, 31, 8, 11, 39, 6, 50 } };

    /// <summary>Mean over t with labels[b, t+1] ≠ −100 of −log softmax(logits[b, t])[labels[b, t+1]], in double, from the logits as numbers.</summary>
    static double HandLoss(CausalLM model)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var logits = model.Forward(tensor(Ids)).to_type(ScalarType.Float64);
        int b = Ids.GetLength(0), t = Ids.GetLength(1), v = (int)logits.shape[2];
        var values = logits.data<double>().ToArray();
        double sum = 0;
        int count = 0;
        for (int i = 0; i < b; i++)
            for (int j = 0; j + 1 < t; j++)
            {
                long target = Labels[i, j + 1];
                if (target == X) continue;
                int row = (i * t + j) * v;
                double max = double.NegativeInfinity;
                for (int k = 0; k < v; k++) max = Math.Max(max, values[row + k]);
                double logSum = 0;
                for (int k = 0; k < v; k++) logSum += Math.Exp(values[row + k] - max);
                sum += max + Math.Log(logSum) - values[row + (int)target];
                count++;
            }
        Assert.Equal(4 + 8, count);
        return sum / count;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(4096)]
    public void ChunkedLossEqualsTheHandComputation(int chunk)
    {
        using var model = LoadGpt2();
        double expected = HandLoss(model);
        using var _ = no_grad();
        using var hidden = model.Hidden(tensor(Ids));
        using var loss = CausalLMLoss.Mean(model, hidden, tensor(Labels), chunk);
        Assert.Equal(expected, loss.item<float>(), 1e-5);
        var (sum, count) = CausalLMLoss.Sum(model, hidden, tensor(Labels), chunk);
        Assert.Equal(12, count);
        Assert.Equal(expected * 12, sum.item<float>(), 1e-4);
    }

    [Fact]
    public void ChunkedLossEqualsTorchCrossEntropyOverAllLogits()
    {
        using var model = LoadLlama();
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var hidden = model.Hidden(tensor(Ids));
        var logits = model.Logits(hidden).to_type(ScalarType.Float32);
        var unchunked = nn.functional.cross_entropy(
            logits.narrow(1, 0, 8).reshape(-1, logits.shape[2]), tensor(Labels).narrow(1, 1, 8).reshape(-1), ignore_index: X);
        foreach (int chunk in new[] { 1, 3, 7, 100 })
            Assert.Equal(unchunked.item<float>(), CausalLMLoss.Mean(model, hidden, tensor(Labels), chunk).item<float>(), 1e-6);
    }

    [Fact]
    public void NothingLabelledGivesNaNMean()
    {
        using var model = LoadGpt2();
        using var scope = NewDisposeScope();
        var hidden = model.Hidden(tensor(Ids));
        var labels = full(Ids.GetLength(0), Ids.GetLength(1), X, ScalarType.Int64);
        Assert.True(double.IsNaN(CausalLMLoss.Mean(model, hidden, labels).item<float>()));
        Assert.Equal(0.0, CausalLMLoss.Backward(model, hidden, labels, 1.0));
    }

    /// <summary>Chunked backward = one backward through the unchunked mean, for every parameter (tied GPT-2 head: wte gets both paths).</summary>
    [Theory]
    [InlineData("gpt2", 2)]
    [InlineData("llama", 5)]
    public void ChunkedBackwardGivesTheSameGradientsAsPlainAutograd(string family, int chunk)
    {
        using var model = family == "gpt2" ? LoadGpt2() : LoadLlama();
        var expected = Gradients(model, () =>
        {
            var hidden = model.Hidden(tensor(Ids));
            CausalLMLoss.Mean(model, hidden, tensor(Labels), 4096).backward();
        });
        var actual = Gradients(model, () =>
        {
            var hidden = model.Hidden(tensor(Ids));
            double sum = CausalLMLoss.Backward(model, hidden, tensor(Labels), 1.0 / 12, chunk);
            Assert.Equal(HandLoss(model) * 12, sum, 1e-4);
        });
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var name in expected.Keys)
            Assert.True(MaxAbsDiff(expected[name], actual[name]) < 1e-6, $"{name}: {MaxAbsDiff(expected[name], actual[name])}");
    }

    /// <summary>Only the untied lm_head trains: nothing before the head needs a gradient, and the head gets the right one.</summary>
    [Fact]
    public void BackwardWorksWhenOnlyTheOutputHeadTrains()
    {
        using var model = LoadLlama();
        TrainOnly(model, name => name == "lm_head.weight");
        var expected = Gradients(model, () => CausalLMLoss.Mean(model, model.Hidden(tensor(Ids)), tensor(Labels)).backward());
        var actual = Gradients(model, () => CausalLMLoss.Backward(model, model.Hidden(tensor(Ids)), tensor(Labels), 1.0 / 12, 3));
        Assert.Single(actual);
        Assert.True(MaxAbsDiff(expected["lm_head.weight"], actual["lm_head.weight"]) < 1e-6);
    }

    static Dictionary<string, float[]> Gradients(CausalLM model, Action backward)
    {
        using var scope = NewDisposeScope();
        foreach (var p in model.parameters()) p.grad = null;
        backward();
        var grads = model.named_parameters().Where(p => p.parameter.grad is not null)
            .ToDictionary(p => p.name, p => Values(p.parameter.grad!));
        foreach (var p in model.parameters()) p.grad = null;
        return grads;
    }
}
