using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Privacy;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using TorchSharp.Modules;
using static PeftSharp.Tests.Training.TrainingTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Privacy;

/// <summary>DP-SGD's parts: batched per-example LoRA gradients against one backward pass per example, clipping, noise, sampling.</summary>
public class DpSgdTests
{
    static (CausalLM Model, LoraModel Lora, List<(string Name, Parameter Param)> Trainable) TinyLora(bool loraBias = false)
    {
        var model = LoadLlama(seed: 3);
        // init_lora_weights=false: B ≠ 0, so both factors get non-zero gradients.
        var lora = LoraModel.Create(model, new LoraConfig { R = 4, LoraAlpha = 8, InitLoraWeights = InitLoraWeights.False, LoraBias = loraBias,
            TargetModules = TargetModules.AllLinear }, seed: 7);
        return (model, lora, lora.TrainableParameters().ToList());
    }

    static List<TrainingExample> MixedLengthExamples()
    {
        var examples = RandomExamples(4, 9, Llama.VocabSize, seed: 11);
        // different lengths (padding in the batch) and a prompt-masked example
        examples[1] = new TrainingExample(examples[1].InputIds[..5], examples[1].Labels[..5]);
        var labels = (int[])examples[2].Labels.Clone();
        for (int i = 0; i < 4; i++) labels[i] = (int)CausalLMLoss.IgnoreIndex;
        examples[2] = new TrainingExample(examples[2].InputIds, labels);
        return examples;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PerExampleGradientsEqualOneBackwardPerExample(bool loraBias)
    {
        var (model, lora, trainable) = TinyLora(loraBias);
        using var _ = model;
        var examples = MixedLengthExamples();

        // Reference: each example alone, loss = its mean token loss, one backward, read .grad.
        var want = new List<Dictionary<string, float[]>>();
        foreach (var e in examples)
        {
            using var scope = NewDisposeScope();
            foreach (var (_, p) in trainable) p.grad = null;
            var batch = Batch.Collate([e], 0);
            var hidden = model.Hidden(batch.InputIds, null, batch.ModelMask);
            CausalLMLoss.Mean(model, hidden, batch.Labels).backward();
            want.Add(trainable.ToDictionary(t => t.Name, t => Values(t.Param.grad!)));
        }
        foreach (var (_, p) in trainable) p.grad = null;

        using var perExample = new PerExampleGradients(lora, trainable);
        using (var scope = NewDisposeScope())
        {
            var batch = Batch.Collate(examples, 0);
            var hidden = model.Hidden(batch.InputIds, null, batch.ModelMask);
            var losses = PerExampleLoss.Backward(model, hidden, batch.Labels);
            Assert.Equal(examples.Count, losses.Length);
            var grads = perExample.Collect();
            Assert.Equal(trainable.Count, grads.Count);
            foreach (var (name, p) in trainable)
            {
                var g = grads[p];
                Assert.Equal([examples.Count, .. p.shape], g.shape);
                for (int n = 0; n < examples.Count; n++)
                {
                    var got = Values(g[n]);
                    double scale = want[n][name].Max(Math.Abs);
                    Assert.True(MaxAbsDiff(want[n][name], got) <= 1e-4 * scale + 1e-7, $"{name}, example {n}: {MaxAbsDiff(want[n][name], got)} (max {scale})");
                }
            }
        }
    }

    [Fact]
    public void ClippingBoundsEveryExampleAndSumsAsTheFormulaSays()
    {
        var (model, lora, trainable) = TinyLora();
        using var _ = model;
        var examples = MixedLengthExamples();
        using var perExample = new PerExampleGradients(lora, trainable);
        using var scope = NewDisposeScope();
        var batch = Batch.Collate(examples, 0);
        PerExampleLoss.Backward(model, model.Hidden(batch.InputIds, null, batch.ModelMask), batch.Labels);
        var grads = perExample.Collect();

        // Norms by hand: √(Σ over all parameters and coordinates of g²), per example.
        var byHand = new double[examples.Count];
        for (int n = 0; n < examples.Count; n++) byHand[n] = Math.Sqrt(grads.Values.Sum(g => Values(g[n]).Sum(v => (double)v * v)));
        double c = byHand.OrderBy(v => v).ElementAt(1);   // some examples clipped, some not
        Assert.True(byHand.Min() < c && byHand.Max() > c);

        for (int n = 0; n < examples.Count; n++)
        {
            var single = grads.ToDictionary(kv => kv.Key, kv => kv.Value.narrow(0, n, 1), (IEqualityComparer<Parameter>)ReferenceEqualityComparer.Instance);
            var sums = new Dictionary<Parameter, Tensor>(ReferenceEqualityComparer.Instance);
            PerExampleClipping.ClipAndAccumulate(single, c, sums);
            double norm = Math.Sqrt(sums.Values.Sum(s => Values(s).Sum(v => (double)v * v)));
            Assert.True(norm <= c * (1 + 1e-5), $"example {n}: clipped norm {norm} > C = {c}");
            if (byHand[n] < c) Assert.True(Math.Abs(byHand[n] - norm) < 1e-4 * c, $"example {n}: norm {norm}, by hand {byHand[n]}, C {c}, all {string.Join(",", byHand)}");
            foreach (var s in sums.Values) s.Dispose();
        }

        var total = new Dictionary<Parameter, Tensor>(ReferenceEqualityComparer.Instance);
        PerExampleClipping.ClipAndAccumulate(grads, c, total);
        foreach (var (p, g) in grads)
        {
            var want = new double[p.numel()];
            for (int n = 0; n < examples.Count; n++)
            {
                double f = Math.Min(1, c / (byHand[n] + 1e-6));
                var v = Values(g[n]);
                for (int i = 0; i < want.Length; i++) want[i] += f * v[i];
            }
            var got = Values(total[p]);
            for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(got[i] - want[i]) <= 1e-5 * (1 + Math.Abs(want[i])));
        }
        foreach (var s in total.Values) s.Dispose();
    }

    [Fact]
    public void NoiseOfAnEmptyBatchHasTheStandardDeviationSigmaCOverB()
    {
        var (model, lora, trainable) = TinyLora();
        using var _ = model;
        var train = RandomExamples(400, 6, Llama.VocabSize, seed: 5);
        var options = new DpSgdOptions { MaxGradNorm = 0.5, NoiseMultiplier = 1.3, ExpectedBatchSize = 2, MicroBatchSize = 2, Seed = 9 };
        using var dp = new DpSgd(model, lora, trainable, train, 0, options);
        long step = Enumerable.Range(0, 1000).First(s => PoissonSampling.Batch(train.Count, dp.SampleRate, options.Seed, s).Length == 0);
        manual_seed(1);
        var result = dp.Compute(step);
        Assert.Equal(0, result.Examples);
        var values = trainable.SelectMany(t => Values(t.Param.grad!)).Select(v => (double)v).ToArray();
        Assert.True(values.Length > 2000, $"{values.Length} coordinates");
        double mean = values.Average(), std = Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Length - 1));
        double want = 1.3 * 0.5 / 2;
        Assert.True(Math.Abs(std - want) < 0.05 * want, $"std {std}, want {want}, n {values.Length}, first {values[0]} {values[1]} {values[^1]}");
        Assert.True(Math.Abs(mean) < 4 * want / Math.Sqrt(values.Length), $"mean {mean}");
    }

    [Fact]
    public void GradientIsClippedSumPlusNoiseOverExpectedBatch()
    {
        var (model, lora, trainable) = TinyLora();
        using var _ = model;
        var train = RandomExamples(12, 7, Llama.VocabSize, seed: 6);
        var options = new DpSgdOptions { MaxGradNorm = 0.05, NoiseMultiplier = 1e-9, ExpectedBatchSize = 4, MicroBatchSize = 3, Seed = 2 };
        using var dp = new DpSgd(model, lora, trainable, train, 0, options);
        long step = Enumerable.Range(0, 100).First(s => PoissonSampling.Batch(train.Count, dp.SampleRate, options.Seed, s).Length > 3);
        var batch = PoissonSampling.Batch(train.Count, dp.SampleRate, options.Seed, step);   // several micro-batches
        dp.Compute(step);
        var got = trainable.ToDictionary(t => t.Name, t => Values(t.Param.grad!));

        // By hand: one backward per sampled example, clip its whole gradient to C, sum, divide by the expected batch size.
        var want = trainable.ToDictionary(t => t.Name, t => new double[t.Param.numel()]);
        foreach (var index in batch)
        {
            using var scope = NewDisposeScope();
            foreach (var (_, p) in trainable) p.grad = null;
            var b = Batch.Collate([train[index]], 0);
            CausalLMLoss.Mean(model, model.Hidden(b.InputIds, null, b.ModelMask), b.Labels).backward();
            var g = trainable.ToDictionary(t => t.Name, t => Values(t.Param.grad!));
            double norm = Math.Sqrt(g.Values.Sum(v => v.Sum(x => (double)x * x)));
            double f = Math.Min(1, 0.05 / (norm + 1e-6));
            foreach (var (name, v) in g) for (int i = 0; i < v.Length; i++) want[name][i] += f * v[i] / 4;
        }
        foreach (var (name, w) in want)
            for (int i = 0; i < w.Length; i++) Assert.True(Math.Abs(got[name][i] - w[i]) <= 1e-5 * (1 + Math.Abs(w[i]) * 100), $"{name}[{i}]: {got[name][i]} vs {w[i]}");
        Assert.True(dp.LastClippedFraction > 0);
    }

    [Fact]
    public void PoissonBatchesHaveTheRateAndRepeatPerStep()
    {
        int total = 0;
        for (int step = 0; step < 200; step++) total += PoissonSampling.Batch(1000, 0.05, 3, step).Length;
        Assert.InRange(total / 200.0, 50 - 1.5, 50 + 1.5);   // mean 50, standard error ≈ 0.49
        Assert.Equal(PoissonSampling.Batch(1000, 0.05, 3, 17), PoissonSampling.Batch(1000, 0.05, 3, 17));
        Assert.NotEqual(PoissonSampling.Batch(1000, 0.05, 3, 17), PoissonSampling.Batch(1000, 0.05, 3, 18));
    }

    [Fact]
    public void NonLoraTrainableParameterIsRefused()
    {
        var (model, lora, trainable) = TinyLora();
        using var _ = model;
        var extra = model.named_parameters().First(p => p.name.EndsWith("norm.weight"));
        extra.parameter.requires_grad = true;
        var ex = Assert.Throws<PeftSharpException>(() => new PerExampleGradients(lora, [.. trainable, (extra.name, extra.parameter)]));
        Assert.Contains(extra.name, ex.Message);
    }
}
