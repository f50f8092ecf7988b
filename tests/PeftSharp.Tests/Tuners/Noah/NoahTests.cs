using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Noah;
using PeftSharp.Tuners.Prompts;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.Noah;

/// <summary>
/// NOAH: a sub-network of the supernet computes what ordinary adapters of its sizes compute (built independently from
/// the sliced numbers, and exported then loaded); the evolutionary search on a known objective; folders; errors.
/// </summary>
public class NoahTests
{
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 53, NEmbd = 24, NLayer = 2, NHead = 3, NPositions = 48 };
    static readonly NaiveLlamaConfig Llama = new() { VocabSize = 47, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2 };

    static (string Dir, int Vocab) Checkpoint(string family)
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        if (family == "gpt2")
        {
            TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 61 });
            return (dir, Gpt2.VocabSize);
        }
        TinyCheckpoints.WriteLlama(dir, Llama, new TinyLlamaOptions { Seed = 62 });
        return (dir, Llama.VocabSize);
    }

    static NoahConfig Small() => new() { LoraRanks = [0, 2, 4], AdapterDims = [0, 3, 6], PromptLengths = [0, 2, 3] };

    static void Randomize(NoahModel n, int seed)
    {
        using var _ = no_grad();
        var gen = new Random(seed);
        foreach (var (_, p) in n.NamedParameters())
            p.copy_(tensor(Enumerable.Range(0, (int)p.numel()).Select(_ => (float)(gen.NextDouble() * 0.6 - 0.3)).ToArray()).view(p.shape));
    }

    static float[] V(Tensor t) => t.detach().to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();

    [Theory]
    [InlineData("gpt2", 2, 3, 2)]
    [InlineData("llama", 4, 3, 3)]
    [InlineData("llama", 2, 0, 2)]
    public void SubNetworkEqualsOrdinaryAdaptersBuiltFromItsSlices(string family, int r, int d, int p)
    {
        var (dir, vocab) = Checkpoint(family);
        using var supernetModel = ModelLoader.Load(dir);
        var noah = NoahModel.Create(supernetModel, Small(), seed: 1);
        Randomize(noah, 2);
        var subnet = new SubNet(r, d, p);
        noah.SetSubNet(subnet);
        var ids = RandomIds(7, vocab, 3);
        var ours = Logits(supernetModel, ids);

        // Ordinary LoRA, bottleneck and prefix adapters on a second copy of the model, filled from the slices by hand.
        using var plain = ModelLoader.Load(dir);
        var peft = new PeftModel(plain);
        var names = new List<string>();
        var parameters = new Dictionary<string, (string Name, Tensor Param)>();
        var byName = noah.NamedParameters().ToDictionary(x => x.Name, x => V(x.Param));
        if (r > 0)
        {
            peft.AddAdapter("lora", new LoraConfig { R = r, LoraAlpha = 16, TargetModules = TargetModules.FromNames(family == "gpt2" ? ["c_attn"] : ["q_proj", "v_proj"]) });
            names.Add("lora");
        }
        if (d > 0)
        {
            peft.AddAdapter("bn", new BottleneckConfig { BottleneckSize = d, UseAdapterP = true, NonLinearity = "tanh", TargetModules = TargetModules.FromNames([family == "gpt2" ? "mlp.c_proj" : "down_proj"]) });
            names.Add("bn");
        }
        if (p > 0)
        {
            peft.AddAdapter("prefix", new PrefixTuningConfig { NumVirtualTokens = p });
            names.Add("prefix");
        }
        peft.SetAdapter([.. names]);
        using (no_grad())
        {
            foreach (var (name, param) in plain.named_parameters())
            {
                float[]? values = null;
                int rows = (int)param.shape[0], cols = param.shape.Length > 1 ? (int)param.shape[1] : 1;
                if (name.EndsWith(".lora_A.lora.weight", StringComparison.Ordinal))
                    values = Rows(byName[name.Replace(".lora_A.lora.weight", ".noah_lora_A.weight")], rows, 4, cols, r);
                else if (name.EndsWith(".lora_B.lora.weight", StringComparison.Ordinal))
                    values = Columns(byName[name.Replace(".lora_B.lora.weight", ".noah_lora_B.weight")], rows, 4, r);
                else if (name.EndsWith(".adapter_down.weight", StringComparison.Ordinal))
                    values = Rows(byName[name.Replace(".adapter_down.weight", ".noah_adapter_down.weight")], rows, 6, cols, d);
                else if (name.EndsWith(".adapter_up.weight", StringComparison.Ordinal))
                    values = Columns(byName[name.Replace(".adapter_up.weight", ".noah_adapter_up.weight")], rows, 6, d);
                else if (name == "prompt_encoder.prefix.embedding.weight")
                    values = Rows(byName["noah_prompt.default.weight"], rows, 3, cols, p);
                if (values is not null) param.copy_(tensor(values).view(param.shape));
            }
        }
        Assert.True(MaxAbsDiff(Logits(plain, ids), ours) < 1e-4);
        // And the sub-network is not the base model.
        using (noah.DisableAdapters()) Assert.True(MaxAbsDiff(Logits(supernetModel, ids), ours) > 1e-3);
    }

    /// <summary>The first <paramref name="keep"/> rows of a [<paramref name="total"/>, cols] matrix.</summary>
    static float[] Rows(float[] m, int rows, int total, int cols, int keep)
    {
        Assert.Equal(keep, rows);
        Assert.Equal(total * cols, m.Length);
        return m.Take(keep * cols).ToArray();
    }

    /// <summary>The first <paramref name="keep"/> columns of a [rows, <paramref name="total"/>] matrix.</summary>
    static float[] Columns(float[] m, int rows, int total, int keep) =>
        Enumerable.Range(0, rows).SelectMany(i => m.Skip(i * total).Take(keep)).ToArray();

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void ExportedFoldersLoadAsOrdinaryAdaptersWithTheSameLogits(string family)
    {
        var (dir, vocab) = Checkpoint(family);
        using var tmp = new TempDir();
        using var supernetModel = ModelLoader.Load(dir);
        var noah = NoahModel.Create(supernetModel, Small(), seed: 4);
        Randomize(noah, 5);
        var subnet = new SubNet(2, 6, 3);
        noah.SetSubNet(subnet);
        var ids = RandomIds(6, vocab, 6);
        var ours = Logits(supernetModel, ids);
        var folders = NoahExport.Write(noah, subnet, tmp.Path);
        Assert.Equal(["lora", "bottleneck", "prefix"], folders.Select(f => Path.GetFileName(f)!).ToArray());
        Assert.Equal(["LORA", "BOTTLENECK", "PREFIX_TUNING"], folders.Select(f => PeftConfig.ReadPeftType(f)!).ToArray());
        // Parameter count of the sub-network = what the folders hold.
        long held = folders.Sum(f => NaiveSafetensors.Read(Path.Combine(f, "adapter_model.safetensors")).Values.Sum(t => t.Values.LongLength));
        Assert.Equal(noah.ParameterCount(subnet), held);

        using var fresh = ModelLoader.Load(dir);
        var peft = PeftModel.Load(fresh, folders, ["lora", "bn", "prefix"]);
        peft.SetAdapter("lora", "bn", "prefix");
        Assert.True(MaxAbsDiff(Logits(fresh, ids), ours) < 1e-4);
    }

    [Fact]
    public void SupernetFolderRoundTrips()
    {
        var (dir, vocab) = Checkpoint("gpt2");
        using var tmp = new TempDir();
        using var a = ModelLoader.Load(dir);
        var noah = NoahModel.Create(a, Small(), seed: 7);
        Randomize(noah, 8);
        noah.SetSubNet(new SubNet(4, 3, 2));
        var peftA = new PeftModel(a);
        var ids = RandomIds(5, vocab, 9);
        var want = Logits(a, ids);
        noah.SaveAdapter(tmp.Path, "default");
        var keys = NaiveSafetensors.Read(tmp.File("adapter_model.safetensors"));
        Assert.Equal([4, 24], keys["base_model.model.transformer.h.0.attn.c_attn.noah_lora_A.weight"].Shape);
        Assert.Equal([24, 6], keys["base_model.model.transformer.h.1.mlp.c_proj.noah_adapter_up.weight"].Shape);
        Assert.Equal([3, 2 * 2 * 24], keys["base_model.model.noah_prompt.weight"].Shape);

        using var b = ModelLoader.Load(dir);
        var peft = PeftModel.Load(b, [tmp.Path]);
        var loaded = peft.Get<NoahModel>()!;
        Assert.Equal(new SubNet(4, 6, 3), loaded.Current); // the largest until told otherwise
        loaded.SetSubNet(new SubNet(4, 3, 2));
        Assert.True(MaxAbsDiff(Logits(b, ids), want) < 1e-5);
        GC.KeepAlive(peftA);
    }

    [Fact]
    public void SearchFindsTheBestSubNetworkUnderTheBudgetOfAKnownObjective()
    {
        var choices = new NoahConfig { LoraRanks = [0, 1, 2, 4, 8, 16], AdapterDims = [0, 2, 4, 8, 16, 32], PromptLengths = [0, 5, 10, 20, 40] };
        // A known objective: the loss falls with each part's size, with diminishing returns; cost is linear.
        long Cost(SubNet s) => 100L * s.Rank + 60L * s.AdapterDim + 30L * s.PromptLength;
        double Loss(SubNet s) => 3.0 / (1 + s.Rank) + 2.0 / (1 + 0.5 * s.AdapterDim) + 1.5 / (1 + 0.2 * s.PromptLength);
        const long budget = 1500;
        var all = from r in choices.LoraRanks from d in choices.AdapterDims from p in choices.PromptLengths select new SubNet(r, d, p);
        var truth = all.Where(s => Cost(s) <= budget).OrderBy(Loss).First();
        var result = EvolutionarySearch.Run(choices, Cost, budget, Loss, new SearchOptions { Population = 8, Generations = 12, Seed = 3 });
        Assert.True(Cost(result.Best) <= budget);
        Assert.Equal(truth, result.Best);
        Assert.Equal(Loss(truth), result.Fitness, 12);
        // Improvement over the random first generation, never worse from one generation to the next.
        Assert.True(result.History[^1] < result.History[0]);
        for (int g = 1; g < result.History.Count; g++) Assert.True(result.History[g] <= result.History[g - 1]);
        Assert.True(result.Evaluations < all.Count()); // it did not try everything
        // Seeded: the same run again gives the same answer and history.
        var again = EvolutionarySearch.Run(choices, Cost, budget, Loss, new SearchOptions { Population = 8, Generations = 12, Seed = 3 });
        Assert.Equal(result.History, again.History);
    }

    [Fact]
    public void SamplerDrawsEveryChoiceAndRepeatsByStep()
    {
        var c = Small();
        var sampler = new SubNetSampler(c, 5);
        var draws = Enumerable.Range(0, 300).Select(i => sampler.ForStep(i)).ToList();
        Assert.Equal(c.LoraRanks.Order(), draws.Select(s => s.Rank).Distinct().Order());
        Assert.Equal(c.AdapterDims.Order(), draws.Select(s => s.AdapterDim).Distinct().Order());
        Assert.Equal(c.PromptLengths.Order(), draws.Select(s => s.PromptLength).Distinct().Order());
        Assert.Equal(draws[17], new SubNetSampler(c, 5).ForStep(17));
    }

    [Fact]
    public void BadInputIsOneLineError()
    {
        var (dir, _) = Checkpoint("gpt2");
        using var m = ModelLoader.Load(dir);
        var ex = Assert.Throws<PeftSharpException>(() => NoahModel.Create(m, new NoahConfig { LoraRanks = [] }));
        Assert.Contains("field 'lora_ranks' is empty", ex.Message);
        ex = Assert.Throws<PeftSharpException>(() => NoahModel.Create(m, new NoahConfig { AdapterDims = [4, -1] }));
        Assert.Contains("field 'adapter_dims' holds -1", ex.Message);
        var noah = NoahModel.Create(m, Small());
        ex = Assert.Throws<PeftSharpException>(() => noah.SetSubNet(new SubNet(3, 0, 0)));
        Assert.Contains("r=3 d=0 p=0 is not in the supernet's choices", ex.Message);
        var choices = new NoahConfig { LoraRanks = [2, 4], AdapterDims = [4], PromptLengths = [5] };
        ex = Assert.Throws<PeftSharpException>(() => EvolutionarySearch.Run(choices, s => 1000, 10, _ => 0, new SearchOptions()));
        Assert.Equal("budget 10: no sub-network fits (the smallest has 1000 trainable parameters)", ex.Message);
    }
}
