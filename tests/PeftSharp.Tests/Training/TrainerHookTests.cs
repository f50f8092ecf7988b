using PeftSharp.Training;
using static PeftSharp.Tests.Training.TrainingTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>The trainer's ExtraLoss and AfterOptimizerStep hooks (used by AdaLoRA): what they add and when they run.</summary>
public class TrainerHookTests
{
    [Fact]
    public void ExtraLossJoinsTheStepsLossAndGradientAndAfterOptimizerStepSeesUpdatedParametersWithGradients()
    {
        var data = RandomExamples(8, 10, Llama.VocabSize, seed: 12);
        var options = new TrainingOptions { MaxSteps = 3, BatchSize = 2, GradientAccumulationSteps = 2, Schedule = ScheduleKind.Constant, Seed = 3, MaxGradNorm = 1e9 };
        const string name = "model.layers.0.mlp.up_proj.weight";

        (List<double> Losses, float[] FirstGrad, List<long> Steps, float[] Initial, bool MovedBeforeHook) Run(bool extra)
        {
            using var model = LoadLlama(seed: 9);
            var trainable = TrainOnly(model, n => n == name);
            var p = trainable[0].Param;
            var initial = Values(p);
            var losses = new List<double>();
            var steps = new List<long>();
            float[]? firstGrad = null;
            bool moved = false;
            using var trainer = new Trainer(model, [new ParameterGroup(trainable, 1e-3, 0)], options, data)
            {
                ExtraLoss = extra ? () => p.square().sum().mul(0.1) : null,
                AfterOptimizerStep = step =>
                {
                    steps.Add(step);
                    if (step == 0)
                    {
                        firstGrad = Values(p.grad!);
                        moved = MaxAbsDiff(Values(p), initial) > 0;
                    }
                },
                Progress = new SyncProgress<TrainingProgress>(r => { if (r.Kind == TrainingEventKind.Step) losses.Add(r.Loss); }),
            };
            trainer.Train();
            return (losses, firstGrad!, steps, initial, moved);
        }

        var plain = Run(extra: false);
        var regularised = Run(extra: true);
        Assert.Equal([0L, 1, 2], regularised.Steps);
        Assert.True(regularised.MovedBeforeHook);
        // Step 0 starts from the same parameters: the reported loss gains 0.1·Σp², the gradient 0.2·p.
        double penalty = 0.1 * plain.Initial.Sum(v => (double)v * v);
        Assert.Equal(plain.Losses[0] + penalty, regularised.Losses[0], 1e-4);
        for (int i = 0; i < plain.Initial.Length; i++)
            Assert.Equal(plain.FirstGrad[i] + 0.2 * plain.Initial[i], regularised.FirstGrad[i], 1e-5);
    }
}
