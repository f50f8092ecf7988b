using PeftSharp.Models;
using PeftSharp.Tests.Reference;
using PeftSharp.Tests.Tokenization;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using TorchSharp.Modules;
using PeftSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tests.Training;

/// <summary>Tiny models, tokenizers and data shared by the training tests.</summary>
internal static class TrainingTestKit
{
    public static readonly NaiveLlamaConfig Llama = new() { VocabSize = 64, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2 };
    public static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 61, NEmbd = 24, NLayer = 2, NHead = 3, NPositions = 40 };

    /// <summary>A tiny random Llama (untied lm_head unless <paramref name="config"/> says otherwise), loaded by the library.</summary>
    public static CausalLM LoadLlama(int seed = 1, ScalarType dtype = ScalarType.Float32, NaiveLlamaConfig? config = null)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteLlama(dir, config ?? Llama, new TinyLlamaOptions { Seed = seed });
        return ModelLoader.Load(dir, dtype);
    }

    public static CausalLM LoadGpt2(int seed = 1, NaiveGpt2Config? config = null)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        TinyCheckpoints.WriteGpt2(dir, config ?? Gpt2, new TinyGpt2Options { Seed = seed });
        return ModelLoader.Load(dir);
    }

    /// <summary>The tiny byte-level BPE of the tokenizer tests, with &lt;|endoftext|&gt; (id 1000) as EOS.</summary>
    public static ModelTokenizer Tokenizer(TempDir dir)
    {
        dir.WriteJson("tokenizer.json", TinyBpe.TokenizerJson());
        dir.WriteJson("tokenizer_config.json", new { eos_token = "<|endoftext|>", tokenizer_class = "GPT2Tokenizer" });
        return ModelTokenizer.Load(dir.Path);
    }

    /// <summary><paramref name="count"/> random sequences of <paramref name="length"/> tokens, labels = inputs.</summary>
    public static List<TrainingExample> RandomExamples(int count, int length, int vocab, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var ids = Enumerable.Range(0, length).Select(_ => random.Next(vocab)).ToArray();
            return new TrainingExample(ids, (int[])ids.Clone());
        }).ToList();
    }

    /// <summary>Float copies of the parameters' values (exact for float32 and bf16).</summary>
    public static Dictionary<string, float[]> Snapshot(CausalLM model) =>
        model.named_parameters().ToDictionary(p => p.name, p => Values(p.parameter));

    public static float[] Values(Tensor t)
    {
        using var scope = NewDisposeScope();
        return t.detach().to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
    }

    public static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs((double)a[i] - b[i]));
        return max;
    }

    /// <summary>Makes only the parameters whose name passes <paramref name="trainable"/> require grad; returns them.</summary>
    public static List<(string Name, Parameter Param)> TrainOnly(CausalLM model, Func<string, bool> trainable)
    {
        foreach (var (name, p) in model.named_parameters()) p.requires_grad = trainable(name);
        return ParameterGroups.Trainable(model);
    }
}

/// <summary>An <see cref="IProgress{T}"/> that runs its action at once, on the reporting thread.</summary>
internal sealed class SyncProgress<T>(Action<T> action) : IProgress<T>
{
    public void Report(T value) => action(value);
}

/// <summary>
/// A float32 low-rank adapter on a bf16 layer, casting at its boundaries as adapters do: trains a bf16 base whose
/// own parameters stay frozen, bit for bit.
/// </summary>
internal sealed class Float32Adapter : ILayerTuner
{
    readonly Linear _layer;
    public readonly Parameter A, B;
    /// <summary>Forward calls so far (a checkpointed block runs twice per step).</summary>
    public int Calls;

    public Float32Adapter(Linear layer, int rank, Generator generator)
    {
        _layer = layer;
        A = new Parameter(randn(rank, layer.InFeatures, generator: generator).mul_(0.1));
        B = new Parameter(zeros(layer.OutFeatures, rank));
    }

    /// <summary>Adapters on every q_proj and v_proj of a Llama, named layers.{i}.{q,v}_proj.{A,B}.</summary>
    public static List<(string Name, Parameter Param)> AttachToQv(LlamaForCausalLM model, int seed)
    {
        using var generator = new Generator((ulong)seed);
        var adapters = new List<(string, Parameter)>();
        for (int i = 0; i < model.model.layers.Count; i++)
            foreach (var (name, layer) in new[] { ("q_proj", model.model.layers[i].self_attn.q_proj), ("v_proj", model.model.layers[i].self_attn.v_proj) })
            {
                var adapter = new Float32Adapter(layer, 4, generator);
                layer.Tuner = adapter;
                adapters.Add(($"layers.{i}.{name}.A", adapter.A));
                adapters.Add(($"layers.{i}.{name}.B", adapter.B));
            }
        return adapters;
    }

    public Tensor Forward(Tensor input)
    {
        Calls++;
        using var scope = NewDisposeScope();
        var delta = nn.functional.linear(nn.functional.linear(input.to_type(ScalarType.Float32), A), B);
        return _layer.BaseForward(input).add(delta.to_type(input.dtype)).MoveToOuterDisposeScope();
    }
}
