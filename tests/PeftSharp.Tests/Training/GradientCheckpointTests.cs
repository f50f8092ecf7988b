using PeftSharp.Models;
using PeftSharp.Training;
using TorchSharp;
using static PeftSharp.Tests.Training.TrainingTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>Gradient checkpointing changes memory, not results: gradients and trained parameters match plain autograd.</summary>
public class GradientCheckpointTests
{
    const long X = CausalLMLoss.IgnoreIndex;
    // Row 1 is padded: the attention mask is one of the tensors the recomputation must keep.
    static readonly long[,] Ids = { { 5, 17, 3, 44, 9, 21, 0 }, { 6, 2, 31, 8, 0, 0, 0 } };
    static readonly long[,] Labels = { { X, X, 3, 44, 9, 21, 0 }, { 6, 2, 31, 8, X, X, X } };
    static readonly long[,] Mask = { { 1, 1, 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 0, 0, 0 } };

    static Dictionary<string, float[]> Gradients(CausalLM model, bool checkpoint, IEnumerable<(string Name, TorchSharp.Modules.Parameter Param)> parameters)
    {
        using var scope = NewDisposeScope();
        var list = parameters.ToList();
        foreach (var (_, p) in list) p.grad = null;
        model.GradientCheckpointing = checkpoint;
        var hidden = model.Hidden(tensor(Ids), null, tensor(Mask));
        CausalLMLoss.Backward(model, hidden, tensor(Labels), 0.1, chunkSize: 3);
        model.GradientCheckpointing = false;
        var grads = list.ToDictionary(p => p.Name, p => Values(p.Param.grad!));
        foreach (var (_, p) in list) p.grad = null;
        return grads;
    }

    static void AssertSame(Dictionary<string, float[]> expected, Dictionary<string, float[]> actual)
    {
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var name in expected.Keys)
            Assert.True(MaxAbsDiff(expected[name], actual[name]) < 1e-6, $"{name}: {MaxAbsDiff(expected[name], actual[name])}");
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void FullFineTuningGradientsAreUnchanged(string family)
    {
        using var model = family == "gpt2" ? LoadGpt2() : LoadLlama();
        var all = ParameterGroups.Trainable(model);
        AssertSame(Gradients(model, false, all), Gradients(model, true, all));
    }

    [Fact]
    public void AdaptersInsideFrozenBlocksGetTheirGradients()
    {
        // Nothing before the blocks requires grad: the checkpoint must still take part in backward.
        using var model = (LlamaForCausalLM)LoadLlama(seed: 3);
        foreach (var p in model.parameters()) p.requires_grad = false;
        var adapters = Float32Adapter.AttachToQv(model, seed: 2);
        using (no_grad()) foreach (var (_, b) in adapters.Where(a => a.Name.EndsWith(".B"))) b.normal_(0, 0.1);
        var tuner = (Float32Adapter)model.model.layers[0].self_attn.q_proj.Tuner!;
        var plain = Gradients(model, false, adapters);
        Assert.All(plain.Values, g => Assert.Contains(g, v => v != 0));
        Assert.Equal(1, tuner.Calls);
        AssertSame(plain, Gradients(model, true, adapters));
        Assert.Equal(3, tuner.Calls); // forward without a graph, then the recomputation in backward
        Assert.All(model.parameters(), p => Assert.Null(p.grad));
    }

    [Fact]
    public void TrainingWithCheckpointingGivesTheSameParametersWithoutTensorGrowth()
    {
        var data = RandomExamples(6, 9, Llama.VocabSize, seed: 4).Select((e, i) => new TrainingExample(e.InputIds[..(5 + i % 4)], e.Labels[..(5 + i % 4)])).ToList();
        (Dictionary<string, float[]>, List<long>) Run(bool checkpoint)
        {
            using var model = LoadLlama(seed: 8);
            var live = new List<long>();
            var options = new TrainingOptions { MaxSteps = 6, BatchSize = 3, LoggingSteps = 1, GradientCheckpointing = checkpoint };
            using var trainer = new Trainer(model, ParameterGroups.DecayAndNoDecay(ParameterGroups.Trainable(model), 1e-3, 0.01), options, data)
            {
                Progress = new SyncProgress<TrainingProgress>(p => { if (p.Kind == TrainingEventKind.Step) live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount); }),
            };
            trainer.Train();
            Assert.False(model.GradientCheckpointing);
            return (Snapshot(model), live);
        }
        var (plain, _) = Run(false);
        var (checkpointed, live) = Run(true);
        AssertSame(plain, checkpointed);
        Assert.All(live.Skip(2), count => Assert.Equal(live[2], count));
    }
}
