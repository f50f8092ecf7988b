using PeftSharp.Models;
using PeftSharp.Models.Layers;
using PeftSharp.Tests.Tensors;
using PeftSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static PeftSharp.Tests.Training.TrainingTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>The trainer end to end on tiny random models: learning, freezing, accumulation, evaluation, memory.</summary>
public class TrainerTests
{
    static TrainingOptions Quick(long steps) => new()
    {
        MaxSteps = steps, BatchSize = 4, Schedule = ScheduleKind.Constant, LoggingSteps = 1, Seed = 5,
    };

    [Fact]
    public void LossFallsWhenMemorisingASmallSet()
    {
        using var model = LoadLlama(seed: 2);
        var data = RandomExamples(8, 12, Llama.VocabSize, seed: 3);
        var groups = ParameterGroups.DecayAndNoDecay(ParameterGroups.Trainable(model), 1e-2, 0.0);
        var losses = new List<double>();
        using var trainer = new Trainer(model, groups, Quick(40), data)
        {
            Progress = new SyncProgress<TrainingProgress>(p => { if (p.Kind == TrainingEventKind.Step) losses.Add(p.Loss); }),
        };
        var result = trainer.Train();
        Assert.Equal(40, result.Steps);
        Assert.False(result.Cancelled);
        Assert.Equal(40, losses.Count);
        Assert.True(losses[0] > 3.5, $"initial loss {losses[0]} (ln 64 ≈ 4.16)");
        Assert.True(losses.TakeLast(5).Average() < 0.5 * losses[0], $"loss went from {losses[0]} to {losses.TakeLast(5).Average()}");
    }

    [Fact]
    public void FrozenParametersStayBitIdenticalAndTrainableOnesChange()
    {
        using var model = LoadGpt2(seed: 4);
        var trainable = TrainOnly(model, name => name.Contains(".h.1.mlp.") || name.StartsWith("transformer.ln_f"));
        Assert.Equal(6, trainable.Count);
        var before = Snapshot(model);
        using var trainer = new Trainer(model, ParameterGroups.DecayAndNoDecay(trainable, 1e-3, 0.1), Quick(3),
            RandomExamples(6, 10, Gpt2.VocabSize, seed: 1));
        trainer.Train();
        var after = Snapshot(model);
        var names = trainable.Select(p => p.Name).ToHashSet();
        foreach (var (name, values) in before)
        {
            if (names.Contains(name)) Assert.True(MaxAbsDiff(values, after[name]) > 1e-5, $"{name} did not change");
            else Assert.Equal(values, after[name]);
        }
    }

    [Fact]
    public void AccumulatingMicroBatchesEqualsOneLargeBatch()
    {
        // Unequal lengths: each way pads differently, but the step's loss is the mean over all labelled tokens either way.
        var random = new Random(9);
        var data = Enumerable.Range(0, 8).Select(i =>
        {
            var ids = Enumerable.Range(0, 4 + i % 5).Select(_ => random.Next(Llama.VocabSize)).ToArray();
            return new TrainingExample(ids, (int[])ids.Clone());
        }).ToList();
        Dictionary<string, float[]> Run(int batch, int accumulation)
        {
            using var model = LoadLlama(seed: 6);
            var options = Quick(2) with { BatchSize = batch, GradientAccumulationSteps = accumulation, Shuffle = false, MaxGradNorm = 0.5 };
            using var trainer = new Trainer(model, [new ParameterGroup(ParameterGroups.Trainable(model), 1e-3, 0.01)], options, data);
            trainer.Train();
            return Snapshot(model);
        }
        var large = Run(4, 1);
        var accumulated = Run(1, 4);
        foreach (var name in large.Keys)
            Assert.True(MaxAbsDiff(large[name], accumulated[name]) < 1e-6, $"{name}: {MaxAbsDiff(large[name], accumulated[name])}");
    }

    [Fact]
    public void EvaluationIsLoggedToMetricsWithTrainingLoss()
    {
        using var folder = new TempDir();
        using var model = LoadLlama(seed: 3);
        var data = RandomExamples(10, 8, Llama.VocabSize, seed: 2);
        var (train, validation) = DataFiles.Split(data, 0.3, seed: 1);
        var options = Quick(4) with { EvalSteps = 2, LoggingSteps = 2, OutputDir = folder.Path, BatchSize = 2 };
        using var trainer = new Trainer(model, [new ParameterGroup(ParameterGroups.Trainable(model), 1e-3, 0)], options, train, validation);
        var result = trainer.Train();

        var entries = MetricsLog.Read(folder.File(MetricsLog.FileName));
        Assert.Equal([2L, 2, 4, 4], entries.Select(e => e.Step));
        Assert.NotNull(entries[0].Loss);
        Assert.NotNull(entries[0].LearningRate);
        Assert.NotNull(entries[1].EvalLoss);
        Assert.Null(entries[1].Loss);
        Assert.Equal(result.LastEvalLoss, entries[3].EvalLoss);
        Assert.Equal(trainer.Evaluate(), entries[3].EvalLoss!.Value, 1e-6);
        // No periodic checkpoints were asked for.
        Assert.Empty(Checkpoint.List(folder.Path));
    }

    [Fact]
    public void EvaluationIsATokenMeanWhateverTheBatchSize()
    {
        using var model = LoadLlama(seed: 3);
        var validation = RandomExamples(5, 8, Llama.VocabSize, seed: 4).Select((e, i) => new TrainingExample(e.InputIds[..(3 + i)], e.Labels[..(3 + i)])).ToList();
        double Evaluate(int batch)
        {
            using var trainer = new Trainer(model, [new ParameterGroup(ParameterGroups.Trainable(model), 1e-3, 0)], Quick(1) with { EvalBatchSize = batch }, validation, validation);
            return trainer.Evaluate();
        }
        Assert.Equal(Evaluate(1), Evaluate(5), 1e-5);
    }

    [Fact]
    public void NoTensorsAccumulateAcrossSteps()
    {
        using var model = LoadLlama(seed: 1);
        var live = new List<long>();
        var groups = ParameterGroups.DecayAndNoDecay(ParameterGroups.Trainable(model), 1e-3, 0.01);
        var data = RandomExamples(7, 9, Llama.VocabSize, seed: 8).Select((e, i) => new TrainingExample(e.InputIds[..(5 + i % 4)], e.Labels[..(5 + i % 4)])).ToList();
        using var trainer = new Trainer(model, groups, Quick(12) with { BatchSize = 3, GradientAccumulationSteps = 2 }, data, data.Take(3).ToList())
        {
            Progress = new SyncProgress<TrainingProgress>(p =>
            {
                if (p.Kind == TrainingEventKind.Step) live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
            }),
        };
        trainer.Train();
        Assert.Equal(12, live.Count);
        Assert.All(live.Skip(2), count => Assert.Equal(live[2], count));
    }

    [Fact]
    public void Bf16BaseTrainsThroughFloat32Adapters()
    {
        using var model = (LlamaForCausalLM)LoadLlama(seed: 7, dtype: ScalarType.BFloat16);
        foreach (var p in model.parameters()) p.requires_grad = false;
        var before = Snapshot(model);
        var adapters = Float32Adapter.AttachToQv(model, seed: 11);
        var losses = new List<double>();
        using var trainer = new Trainer(model, [new ParameterGroup(adapters, 2e-2, 0)], Quick(25), RandomExamples(4, 10, Llama.VocabSize, seed: 5))
        {
            Progress = new SyncProgress<TrainingProgress>(p => { if (p.Kind == TrainingEventKind.Step) losses.Add(p.Loss); }),
        };
        trainer.Train();
        Assert.True(losses.TakeLast(3).Average() < losses[0] - 0.3, $"loss went from {losses[0]} to {losses.TakeLast(3).Average()}");
        var after = Snapshot(model);
        foreach (var name in before.Keys) Assert.Equal(before[name], after[name]);
        Assert.All(adapters, a => Assert.Equal(ScalarType.Float32, a.Item2.dtype));
        Assert.True(adapters.All(a => Values(a.Item2).Any(v => v != 0)));
    }

    [Fact]
    public void BadOptionsAndEmptyInputsAreUserErrors()
    {
        using var model = LoadGpt2();
        var groups = new[] { new ParameterGroup(ParameterGroups.Trainable(model), 1e-3, 0) };
        var data = RandomExamples(2, 4, Gpt2.VocabSize, seed: 1);
        Assert.Throws<PeftSharpException>(() => new Trainer(model, groups, new TrainingOptions { BatchSize = 0 }, data));
        Assert.Throws<PeftSharpException>(() => new Trainer(model, groups, new TrainingOptions(), []));
        Assert.Throws<PeftSharpException>(() => new Trainer(model, [new ParameterGroup([], 1e-3, 0)], new TrainingOptions(), data));
    }
}
