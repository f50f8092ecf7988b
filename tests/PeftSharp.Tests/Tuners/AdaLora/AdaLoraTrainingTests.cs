using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Training;
using PeftSharp.Tuners.AdaLora;
using static PeftSharp.Tests.Models.ModelTestKit;
using static PeftSharp.Tests.Training.TrainingTestKit;
using static TorchSharp.torch;
using Kit = PeftSharp.Tests.Tuners.LoraTestKit;

namespace PeftSharp.Tests.Tuners.AdaLora;

/// <summary>AdaLoRA trained by the trainer's hooks, then saved and loaded in PEFT's format.</summary>
public class AdaLoraTrainingTests
{
    const int InitR = 6, TargetR = 2, Total = 20, Tinit = 3, Tfinal = 5, DeltaT = 2;

    sealed record Run(CausalLM Model, AdaLoraModel Ada, List<(long Step, int Kept)> KeptAfterStep, OrderedDictionary<string, IReadOnlyList<bool>> AtFinalAllocation);

    /// <summary>A tiny Llama with AdaLoRA on q_proj and v_proj (4 layers) trained for 20 steps, as the CLI wires it.</summary>
    static Run Train()
    {
        var model = LoadLlama(seed: 7);
        var config = new AdaLoraConfig
        {
            InitR = InitR, TargetR = TargetR, Tinit = Tinit, Tfinal = Tfinal, DeltaT = DeltaT, TotalStep = Total, LoraAlpha = 16,
            TargetModules = TargetModules.FromNames("q_proj", "v_proj"),
        };
        var ada = AdaLoraModel.Create(model, config, seed: 3);
        var kept = new List<(long, int)>();
        OrderedDictionary<string, IReadOnlyList<bool>>? atFinal = null;
        var options = new TrainingOptions { MaxSteps = Total, BatchSize = 4, Schedule = ScheduleKind.Constant, LoggingSteps = 1, Seed = 5 };
        using var trainer = new Trainer(model, ParameterGroups.DecayAndNoDecay(ada.TrainableParameters(), 2e-2, 0.0), options,
            RandomExamples(16, 12, Llama.VocabSize, seed: 8))
        {
            ExtraLoss = ada.OrthogonalRegularization,
            AfterOptimizerStep = step =>
            {
                ada.UpdateAndAllocate(step + 1);
                kept.Add((step + 1, config.RankPattern?.Values.Sum(v => v.Count(k => k)) ?? -1));
                if (step + 1 == Total - Tfinal) atFinal = new(config.RankPattern!);
            },
        };
        trainer.Train();
        return new Run(model, ada, kept, atFinal!);
    }

    [Fact]
    public void TrainingPrunesOnTheScheduleToTheTargetBudgetWithPrunedValuesExactlyZero()
    {
        var run = Train();
        using var _m = run.Model;
        var ada = run.Ada;
        var config = ada.Configs["default"];
        Assert.Equal(Total, run.KeptAfterStep.Count);

        // Warmup: no allocation. Budgeting: every deltaT steps the kept total is the schedule's budget. Final: the target.
        foreach (var (step, kept) in run.KeptAfterStep)
        {
            var (budget, mask) = ada.Allocator!.BudgetSchedule(step);
            if (step <= Tinit) Assert.Equal(-1, kept);
            else if (step < Total - Tfinal && mask) Assert.Equal(budget, kept);
            else if (step >= Total - Tfinal) Assert.Equal(TargetR * 4, kept);
        }
        Assert.Contains(run.KeptAfterStep, s => s.Kept > TargetR * 4 && s.Kept < InitR * 4);   // a gradual decrease
        Assert.Equal(run.KeptAfterStep.Where(s => s.Kept >= 0).Select(s => s.Kept).OrderByDescending(k => k), run.KeptAfterStep.Where(s => s.Kept >= 0).Select(s => s.Kept));

        // The final allocation stays fixed through the final phase; pruned singular values are exactly 0 at the end.
        var pattern = config.RankPattern!;
        Assert.Equal(run.AtFinalAllocation, pattern);
        Assert.Equal(4, pattern.Count);
        Assert.Equal(TargetR * 4, pattern.Values.Sum(v => v.Count(k => k)));
        foreach (var (path, layer) in ada.Layers)
        {
            var keep = pattern[$"{path}.lora_E"];
            Assert.Equal(InitR, keep.Count);
            var e = Kit.Values(layer.E("default"));
            for (int k = 0; k < InitR; k++)
                if (keep[k]) Assert.NotEqual(0f, e[k]);
                else Assert.Equal(0f, e[k]);
        }
        Assert.Equal(TargetR * 4, ada.KeptRanks().Values.Sum());
    }

    [Fact]
    public void SavedFilesArePeftsAdaLoraFormatAndLoadingReproducesTheLogits()
    {
        var run = Train();
        using var _m = run.Model;
        var ada = run.Ada;
        var ids = RandomIds(10, Llama.VocabSize, 4);
        run.Model.eval();
        var trained = Logits(run.Model, ids);
        var dir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "adapter");
        AdaLoraFiles.Save(ada, dir, baseModelNameOrPath: "tiny-llama");

        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")));
        var root = cfg.RootElement;
        Assert.Equal("ADALORA", root.GetProperty("peft_type").GetString());
        Assert.Equal(Total, root.GetProperty("total_step").GetInt32());
        Assert.Equal(InitR, root.GetProperty("init_r").GetInt32());
        Assert.Equal("tiny-llama", root.GetProperty("base_model_name_or_path").GetString());
        Assert.True(root.GetProperty("inference_mode").GetBoolean());
        var pattern = root.GetProperty("rank_pattern").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(b => b.GetBoolean()).ToArray());
        Assert.Equal(Enumerable.Range(0, 2).SelectMany(i => new[] { $"model.layers.{i}.self_attn.q_proj.lora_E", $"model.layers.{i}.self_attn.v_proj.lora_E" }).Order(StringComparer.Ordinal),
            pattern.Keys.Order(StringComparer.Ordinal));

        // Keys without ".weight" or the adapter name, no ranknum; only the kept triplets, read back by the test's own reader.
        var tensors = NaiveSafetensors.Read(Path.Combine(dir, "adapter_model.safetensors"));
        Assert.Equal(12, tensors.Count);
        foreach (var (path, layer) in ada.Layers)
        {
            var keep = pattern[$"{path}.lora_E"];
            int k = keep.Count(b => b), inDim = (int)layer.Host.InFeatures, outDim = (int)layer.Host.OutFeatures;
            var a = tensors[$"base_model.model.{path}.lora_A"];
            var b = tensors[$"base_model.model.{path}.lora_B"];
            var e = tensors[$"base_model.model.{path}.lora_E"];
            Assert.Equal([k, inDim], a.Shape);
            Assert.Equal([outDim, k], b.Shape);
            Assert.Equal([k, 1], e.Shape);
            var rows = Enumerable.Range(0, InitR).Where(i => keep[i]).ToArray();
            var fullA = Kit.Values(layer.A("default"));
            var fullB = Kit.Values(layer.B("default"));
            var fullE = Kit.Values(layer.E("default"));
            for (int j = 0; j < k; j++)
            {
                Assert.Equal(fullE[rows[j]], e.Values[j]);
                for (int i = 0; i < inDim; i++) Assert.Equal(fullA[rows[j] * inDim + i], a.Values[j * inDim + i]);
                for (int o = 0; o < outDim; o++) Assert.Equal(fullB[o * InitR + rows[j]], b.Values[o * k + j]);
            }
        }

        // Load onto a fresh copy of the base: layers shrink to the kept ranks, ranknum stays init_r, logits match.
        using var fresh = LoadLlama(seed: 7);
        var loaded = AdaLoraFiles.Load(fresh, dir);
        fresh.eval();
        foreach (var (path, layer) in loaded.Layers)
        {
            int kept = pattern[$"{path}.lora_E"].Count(b => b);
            Assert.Equal(kept, layer.RankOf("default"));
            Assert.Equal(kept > 0 ? InitR : 0f, layer.Ranknum("default").item<float>());   // PEFT: rank 0 leaves ranknum 0
        }
        Assert.Empty(loaded.TrainableParameters());
        Assert.True(MaxAbsDiff(trained, Logits(fresh, ids)) < 1e-5);
        loaded.Merge();
        Assert.True(MaxAbsDiff(trained, Logits(fresh, ids)) < 1e-4);
        using (loaded.DisableAdapters()) Assert.True(MaxAbsDiff(trained, Logits(fresh, ids)) > 1e-3);
    }

    [Fact]
    public void Gpt2RoundTripWithAHandMadeRankPatternMatchesTheReference()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Kit.Gpt2, new TinyGpt2Options { Seed = 71 });
        using var model = ModelLoader.Load(dir);
        var config = new AdaLoraConfig { InitR = 4, TotalStep = 10, LoraAlpha = 5, InitLoraWeights = InitLoraWeights.False };
        var ada = AdaLoraModel.Create(model, config, seed: 6);   // gpt2 default: c_attn
        bool[][] keeps = [[true, false, false, true], [false, false, false, false]];
        config.RankPattern = new(StringComparer.Ordinal);
        for (int i = 0; i < 2; i++)
        {
            config.RankPattern[$"transformer.h.{i}.attn.c_attn.lora_E"] = keeps[i];
            using var _ = no_grad();
            for (int k = 0; k < 4; k++) if (!keeps[i][k]) ada.Layers[$"transformer.h.{i}.attn.c_attn"].E("default")[k].zero_();
        }
        var ids = RandomIds(12, Kit.Gpt2.VocabSize, 9);
        var want = new NaiveGpt2(Kit.Gpt2, AdaLoraTestKit.Merged(ada, ckpt.Weights, alpha: 5, ranknum: 4)).Logits(ids);
        Assert.True(MaxAbsDiff(want, Logits(model, ids)) < 1e-4);
        var adapterDir = Path.Combine(TinyCheckpoints.NewTempDirectory(), "a");
        AdaLoraFiles.Save(ada, adapterDir);
        var tensors = NaiveSafetensors.Read(Path.Combine(adapterDir, "adapter_model.safetensors"));
        Assert.Equal([2, 16], tensors["base_model.model.transformer.h.0.attn.c_attn.lora_A"].Shape);
        Assert.Equal([0, 16], tensors["base_model.model.transformer.h.1.attn.c_attn.lora_A"].Shape);   // a layer pruned to rank 0
        using var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(adapterDir, "adapter_config.json")));
        Assert.True(cfg.RootElement.GetProperty("fan_in_fan_out").GetBoolean());

        using var fresh = ModelLoader.Load(dir);
        var loaded = AdaLoraFiles.Load(fresh, adapterDir);
        Assert.Equal(0, loaded.Layers["transformer.h.1.attn.c_attn"].RankOf("default"));
        Assert.True(MaxAbsDiff(want, Logits(fresh, ids)) < 1e-4);
        var plain = (CausalLM)loaded.MergeAndUnload();
        Assert.True(MaxAbsDiff(want, Logits(plain, ids)) < 1e-4);

        // A file whose shapes disagree with rank_pattern is refused with the tensor named.
        var wrong = AdaLoraConfig.Load(adapterDir);
        wrong.RankPattern!["transformer.h.0.attn.c_attn.lora_E"] = [true, true, true, false];
        wrong.Save(adapterDir);
        using var third = ModelLoader.Load(dir);
        var e = Assert.Throws<PeftSharpException>(() => AdaLoraFiles.Load(third, adapterDir));
        Assert.Contains("transformer.h.0.attn.c_attn.lora_", e.Message);
    }
}
