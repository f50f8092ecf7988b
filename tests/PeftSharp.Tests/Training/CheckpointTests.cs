using PeftSharp.Models;
using PeftSharp.Tests.Tensors;
using PeftSharp.Training;
using static PeftSharp.Tests.Training.TrainingTestKit;

namespace PeftSharp.Tests.Training;

/// <summary>Checkpoints: resuming reproduces uninterrupted training, a failed write leaves the previous checkpoint, pruning.</summary>
public class CheckpointTests
{
    // 10 examples in batches of 2 with 2 micro-batches per step: 6 steps cross an epoch boundary (5 batches per epoch).
    static readonly List<TrainingExample> Data = RandomExamples(10, 7, Llama.VocabSize, seed: 21);

    static TrainingOptions Options(string outputDir) => new()
    {
        MaxSteps = 6, BatchSize = 2, GradientAccumulationSteps = 2, Schedule = ScheduleKind.Cosine, WarmupSteps = 2,
        LoggingSteps = 1, OutputDir = outputDir, Seed = 13, MaxGradNorm = 0.1,
    };

    /// <summary>Full fine-tuning of a mixed-dtype-free tiny Llama with bias-free decay/no-decay groups.</summary>
    static Trainer NewTrainer(CausalLM model, TrainingOptions options, Action<TrainingProgress>? progress = null, Action<string>? onCheckpoint = null) =>
        new(model, ParameterGroups.DecayAndNoDecay(ParameterGroups.Trainable(model), 3e-3, 0.05), options, Data)
        {
            Progress = progress is null ? null : new SyncProgress<TrainingProgress>(progress),
            OnCheckpoint = onCheckpoint,
        };

    [Fact]
    public void ResumedTrainingEqualsUninterruptedTraining()
    {
        using var straightDir = new TempDir();
        using var resumedDir = new TempDir();

        using var straight = LoadLlama(seed: 9);
        using (var trainer = NewTrainer(straight, Options(straightDir.Path))) trainer.Train();

        // Interrupted after step 3 by cancellation, which saves a checkpoint; the adapter callback sees the folder.
        using var cancel = new CancellationTokenSource();
        var seenByCallback = new List<string>();
        using (var interruptedModel = LoadLlama(seed: 9))
        using (var trainer = NewTrainer(interruptedModel, Options(resumedDir.Path),
                   p => { if (p.Kind == TrainingEventKind.Step && p.Step == 3) cancel.Cancel(); },
                   dir => { seenByCallback.Add(dir); File.WriteAllText(Path.Combine(dir, "adapter_config.json"), "{}"); }))
        {
            var result = trainer.Train(cancel.Token);
            Assert.True(result.Cancelled);
            Assert.Equal(3, result.Steps);
            Assert.Equal(Path.Combine(resumedDir.Path, "checkpoint-3"), result.LastCheckpoint);
        }
        Assert.Single(seenByCallback);
        string checkpoint = Checkpoint.Latest(resumedDir.Path)!;
        Assert.EndsWith("checkpoint-3", checkpoint);
        Assert.True(File.Exists(Path.Combine(checkpoint, "adapter_config.json")));

        // A fresh process: the base model again, then everything else from the checkpoint.
        using var resumed = LoadLlama(seed: 9);
        using (var trainer = NewTrainer(resumed, Options(resumedDir.Path)))
        {
            TorchSharp.torch.manual_seed(12345);
            trainer.Resume(checkpoint);
            Assert.Equal(3, trainer.GlobalStep);
            Assert.Equal(new DataPosition(1, 1), trainer.Loader.Position); // 6 micro-batches, 5 per epoch
            using (var saved = PeftSharp.Tensors.SafetensorsFile.Open(Path.Combine(checkpoint, Checkpoint.RngFile)))
            using (var state = saved.Read("torch"))
            using (var now = TorchSharp.torch.random.get_rng_state())
                Assert.Equal(Values(state.to_type(TorchSharp.torch.ScalarType.Float32)), Values(now.to_type(TorchSharp.torch.ScalarType.Float32)));
            var result = trainer.Train();
            Assert.False(result.Cancelled);
            Assert.Equal(6, result.Steps);
        }

        var expected = Snapshot(straight);
        var actual = Snapshot(resumed);
        foreach (var name in expected.Keys)
            Assert.True(MaxAbsDiff(expected[name], actual[name]) <= 1e-6, $"{name}: {MaxAbsDiff(expected[name], actual[name])}");
        Assert.True(MaxAbsDiff(expected["model.norm.weight"], Snapshot(LoadLlama(seed: 9))["model.norm.weight"]) > 1e-4, "training changed nothing");

        // The resumed log replaces what the interrupted run logged after its checkpoint: steps 1..6, once each.
        var straightLog = MetricsLog.Read(Path.Combine(straightDir.Path, MetricsLog.FileName));
        var resumedLog = MetricsLog.Read(Path.Combine(resumedDir.Path, MetricsLog.FileName));
        Assert.Equal([1L, 2, 3, 4, 5, 6], resumedLog.Select(e => e.Step));
        Assert.Equal(straightLog.Select(e => e.Loss!.Value), resumedLog.Select(e => e.Loss!.Value), (a, b) => Math.Abs(a - b) < 1e-6);
    }

    [Fact]
    public void AFailedCheckpointWriteLeavesThePreviousOneIntact()
    {
        using var output = new TempDir();
        using var model = LoadLlama(seed: 2);
        var options = Options(output.Path) with { SaveSteps = 2 };
        Dictionary<string, byte[]>? atStep2 = null;
        using var trainer = NewTrainer(model, options,
            p => { if (p.Kind == TrainingEventKind.Checkpoint && p.Step == 2) atStep2 = ReadAll(p.CheckpointDir!); },
            dir =>
            {
                // The trainer's own files are already in the temporary folder; the "crash" comes after them.
                if (Path.GetFileName(dir).StartsWith("checkpoint-4"))
                {
                    Assert.True(File.Exists(Path.Combine(dir, Checkpoint.TrainableFile)));
                    File.WriteAllText(Path.Combine(dir, "adapter_model.safetensors"), "partial");
                    throw new IOException("disk full (simulated)");
                }
            });
        var e = Assert.Throws<IOException>(() => trainer.Train());
        Assert.Contains("simulated", e.Message);

        Assert.Equal([2L], Checkpoint.List(output.Path).Select(c => c.Step));
        Assert.Equal(["checkpoint-2", MetricsLog.FileName], Directory.EnumerateFileSystemEntries(output.Path).Select(Path.GetFileName).Order());
        var now = ReadAll(Path.Combine(output.Path, "checkpoint-2"));
        Assert.Equal(atStep2!.Keys.Order(), now.Keys.Order());
        foreach (var (name, bytes) in atStep2) Assert.Equal(bytes, now[name]);

        // A crash that killed the process would leave the temporary folder behind: it is not a checkpoint,
        // and the previous one still resumes.
        var stale = Path.Combine(output.Path, "checkpoint-4.tmp-0123456789ab");
        Directory.CreateDirectory(stale);
        File.WriteAllText(Path.Combine(stale, Checkpoint.TrainableFile), "partial");
        Assert.EndsWith("checkpoint-2", Checkpoint.Latest(output.Path));
        using var again = NewTrainer(LoadLlama(seed: 2), options);
        again.Resume(Checkpoint.Latest(output.Path)!);
        Assert.Equal(2, again.GlobalStep);
        again.Train();
        Assert.False(Directory.Exists(stale)); // the next save cleans up
        Assert.Equal([4L, 6], Checkpoint.List(output.Path).Select(c => c.Step)); // SaveTotalLimit = 2
    }

    [Fact]
    public void OnlyTheNewestCheckpointsAreKept()
    {
        using var output = new TempDir();
        using var model = LoadLlama(seed: 2);
        var saved = new List<long>();
        using var trainer = NewTrainer(model, Options(output.Path) with { SaveSteps = 1, SaveTotalLimit = 3 },
            p => { if (p.Kind == TrainingEventKind.Checkpoint) saved.Add(p.Step); });
        trainer.Train();
        Assert.Equal([1L, 2, 3, 4, 5, 6], saved);
        Assert.Equal([4L, 5, 6], Checkpoint.List(output.Path).Select(c => c.Step));
        var state = Checkpoint.LoadState(Checkpoint.Latest(output.Path)!);
        Assert.Equal(6, state.GlobalStep);
        Assert.Equal(new DataState(2, 2, 13, 10, 2, true), state.Data); // 12 micro-batches of 5 per epoch
        Assert.Equal("cosine", state.Scheduler.Kind);
    }

    [Fact]
    public void ResumingWithOtherDataOrParametersIsAUserError()
    {
        using var output = new TempDir();
        using (var model = LoadLlama(seed: 2))
        using (var trainer = NewTrainer(model, Options(output.Path) with { MaxSteps = 1, SaveSteps = 1 })) trainer.Train();
        string checkpoint = Checkpoint.Latest(output.Path)!;

        using var other = LoadLlama(seed: 2);
        using var fewer = new Trainer(other, [new ParameterGroup(ParameterGroups.Trainable(other), 1e-3, 0)], Options(output.Path), Data.Take(9).ToList());
        Assert.Contains("10 training examples", Assert.Throws<PeftSharpException>(() => fewer.Resume(checkpoint)).Message);

        var renamed = ParameterGroups.Trainable(other).Select(p => ("x." + p.Name, p.Param)).ToList();
        using var otherNames = new Trainer(other, [new ParameterGroup(renamed, 1e-3, 0)], Options(output.Path), Data);
        var e = Assert.Throws<PeftSharpException>(() => otherNames.Resume(checkpoint));
        Assert.Contains("missing tensor 'x.", e.Message);
        Assert.Contains(Checkpoint.TrainableFile, e.Message);

        Assert.Contains("not a PeftSharp checkpoint", Assert.Throws<PeftSharpException>(() => otherNames.Resume(output.Path)).Message);
    }

    static Dictionary<string, byte[]> ReadAll(string dir) =>
        Directory.EnumerateFiles(dir).ToDictionary(f => Path.GetFileName(f), f => File.ReadAllBytes(f));
}
