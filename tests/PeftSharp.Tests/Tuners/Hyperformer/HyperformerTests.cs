using PeftSharp.Composition;
using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.Hyperformer;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.Hyperformer;

/// <summary>
/// Hyperformer: the hypernetwork's adapters written out as loops over its parameters (embeddings → projector →
/// generators → o + U·swish(D·o + b_D) + b_U) as naive sub-layer hooks; one task exported as an AdapterHub
/// adapter gives the same logits on a fresh model; per-example task ids; one-line errors.
/// </summary>
public class HyperformerTests
{
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 37, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 32 };

    static (string Dir, Func<NaiveHooks, Func<int[], float[,]>> Naive) Write()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 91 });
        return (dir, h => new NaiveGpt2(Gpt2, ckpt.Weights) { Hooks = h }.Logits);
    }

    static double[] V(Tensor t) => t.detach().to_type(ScalarType.Float64).cpu().contiguous().data<double>().ToArray();

    static double[] Affine(double[] w, double[] b, double[] x)
    {
        int outDim = b.Length, inDim = x.Length;
        var y = new double[outDim];
        for (int i = 0; i < outDim; i++)
        {
            double s = b[i];
            for (int j = 0; j < inDim; j++) s += w[i * inDim + j] * x[j];
            y[i] = s;
        }
        return y;
    }

    static HyperformerModel Create(CausalLM model)
    {
        var hyper = HyperformerModel.Create(model, new HyperformerConfig { NumTasks = 3, ReductionFactor = 4, TaskEmbeddingDim = 5, TaskHiddenDim = 7, ProjectedTaskEmbeddingDim = 6 }, seed: 2);
        // The up generators start at zero (no change to the model): give them values so that the adapters act.
        var p = hyper.Network("default").named_parameters().ToDictionary(x => x.name, x => x.parameter);
        var rnd = new Random(3);
        using (no_grad())
            foreach (var name in new[] { "up_weight_generator.weight", "up_weight_generator.bias", "up_bias_generator.weight", "up_bias_generator.bias" })
                p[name].copy_(tensor(Enumerable.Range(0, (int)p[name].numel()).Select(_ => (float)(rnd.NextDouble() - 0.5) * 0.6f).ToArray()).view(p[name].shape));
        return hyper;
    }

    [Fact]
    public void GeneratedAdaptersMatchAPlainLoopAndTheExportedAdapter()
    {
        var (dir, naive) = Write();
        using var model = ModelLoader.Load(dir);
        var hyper = Create(model);
        var p = hyper.Network("default").named_parameters().ToDictionary(x => x.name, x => V(x.parameter));
        int e = 5, h = Gpt2.NEmbd, d = 4;
        double[] Row(string name, int i) => p[name].Skip(i * e).Take(e).ToArray();
        Func<int, string, double[], double[], double[], double[]> Hook(int task) => (layer, kind, residual, input, o) =>
        {
            double[] z = [.. Row("task_embedding.weight", task), .. Row("layer_id_embedding.weight", layer), .. Row("position_embedding.weight", kind == "attention" ? 0 : 1)];
            var h1 = Affine(p["task_projector.0.weight"], p["task_projector.0.bias"], z).Select(x => Math.Max(0, x)).ToArray();
            var i = Affine(p["task_projector.2.weight"], p["task_projector.2.bias"], h1);
            var down = Affine(p["down_weight_generator.weight"], p["down_weight_generator.bias"], i);  // [d·H]
            var downB = Affine(p["down_bias_generator.weight"], p["down_bias_generator.bias"], i);
            var up = Affine(p["up_weight_generator.weight"], p["up_weight_generator.bias"], i);        // [H·d]
            var upB = Affine(p["up_bias_generator.weight"], p["up_bias_generator.bias"], i);
            var a = Affine(down, downB, o).Select(x => x / (1 + Math.Exp(-x))).ToArray();
            var u = Affine(up, upB, a);
            return o.Zip(u, (x, y) => x + y).ToArray();
        };
        Assert.Equal(d, hyper.Network("default").Bottleneck);

        var ids = RandomIds(6, Gpt2.VocabSize, 4);
        float[,] Run(int task)
        {
            using var t = tensor(new long[] { task });
            using var _ = model.Extensions.UseTaskIds(t);
            return Logits(model, ids);
        }
        var task1 = Run(1);
        Assert.True(MaxAbsDiff(naive(new NaiveHooks { SubLayer = Hook(1) })(ids), task1) < 1e-4);
        Assert.True(MaxAbsDiff(naive(new NaiveHooks { SubLayer = Hook(2) })(ids), Run(2)) < 1e-4);
        Assert.True(MaxAbsDiff(task1, Run(2)) > 1e-3);

        // Exported for task 1: an AdapterHub Houlsby adapter on a fresh copy of the base gives the same logits.
        using var tmp = new TempDir();
        string outDir = Path.Combine(tmp.Path, "task1");
        HyperformerExport.Export(hyper, "default", 1, outDir);
        using var fresh = ModelLoader.Load(dir);
        AdapterHubFiles.Load(fresh, outDir);
        Assert.True(MaxAbsDiff(task1, Logits(fresh, ids)) < 1e-5);
    }

    [Fact]
    public void EachExampleUsesItsOwnTaskAndFoldersReadBack()
    {
        var (dir, _) = Write();
        using var model = ModelLoader.Load(dir);
        var hyper = Create(model);
        var a = RandomIds(5, Gpt2.VocabSize, 5);
        var b = RandomIds(5, Gpt2.VocabSize, 6);
        float[,] One(int[] ids, int task)
        {
            using var t = tensor(new long[] { task });
            using var _ = model.Extensions.UseTaskIds(t);
            return Logits(model, ids);
        }
        var ea = One(a, 0);
        var eb = One(b, 2);
        using var batch = tensor(a.Concat(b).Select(i => (long)i).ToArray(), [2, 5]);
        using var tasks = tensor(new long[] { 0, 2 });
        Tensor logits;
        using (no_grad())
        using (model.Extensions.UseTaskIds(tasks)) logits = model.Forward(batch);
        using (logits)
        {
            Assert.True(MaxAbsDiff(ea, ToArray(logits[0].cpu())) < 1e-5);
            Assert.True(MaxAbsDiff(eb, ToArray(logits[1].cpu())) < 1e-5);
        }
        using var tmp = new TempDir();
        hyper.SaveAdapter(tmp.Path, "default");
        using var other = ModelLoader.Load(dir);
        var peft = PeftModel.Load(other, [tmp.Path], ["default"]);
        using (var t = tensor(new long[] { 2 }))
        using (other.Extensions.UseTaskIds(t))
            Assert.True(MaxAbsDiff(eb, Logits(other, b)) < 1e-5);
    }

    [Fact]
    public void BadInputIsAOneLineError()
    {
        var (dir, _) = Write();
        using var model = ModelLoader.Load(dir);
        var hyper = Create(model);
        var ids = RandomIds(4, Gpt2.VocabSize, 7);
        var e = Assert.Throws<PeftSharpException>(() => Logits(model, ids));
        Assert.Contains("Hyperformer needs a task id per example", e.Message);
        using (var t = tensor(new long[] { 3 }))
        using (model.Extensions.UseTaskIds(t))
        {
            e = Assert.Throws<PeftSharpException>(() => Logits(model, ids));
            Assert.Contains("task id 3 is out of range; this adapter has num_tasks 3", e.Message);
        }
        using var tmp = new TempDir();
        e = Assert.Throws<PeftSharpException>(() => HyperformerExport.Export(hyper, "default", 5, tmp.Path));
        Assert.Contains("num_tasks 3", e.Message);
        e = Assert.Throws<PeftSharpException>(() => HyperformerConfig.FromJson("""{"peft_type": "HYPERFORMER", "num_tasks": 0}"""));
        Assert.Contains("num_tasks", e.Message);
    }
}
