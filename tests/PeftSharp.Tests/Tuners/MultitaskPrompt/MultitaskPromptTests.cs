using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Reference;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.MultitaskPrompt;
using static PeftSharp.Tests.Models.ModelTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.MultitaskPrompt;

/// <summary>
/// Multitask prompt tuning (PEFT's MULTITASK_PROMPT_TUNING) against a plain loop: each task's prompt is
/// shared ⊙ (cols[t] · rows[t]) computed element by element, fed to the naive GPT-2 as virtual tokens; PEFT folders
/// written by hand (plain safetensors + JSON), the source-task inits and one-line errors.
/// </summary>
public class MultitaskPromptTests
{
    static readonly NaiveGpt2Config Gpt2 = new() { VocabSize = 53, NEmbd = 12, NLayer = 2, NHead = 3, NPositions = 48 };
    const int N = 4, D = 12;

    static (CausalLM Model, Func<NaiveHooks, Func<int[], float[,]>> Naive) Load()
    {
        var dir = TinyCheckpoints.NewTempDirectory();
        var ckpt = TinyCheckpoints.WriteGpt2(dir, Gpt2, new TinyGpt2Options { Seed = 71 });
        return (ModelLoader.Load(dir), h => new NaiveGpt2(Gpt2, ckpt.Weights) { Hooks = h }.Logits);
    }

    static float[] Values(Tensor t) => t.detach().to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();

    /// <summary>prompt[i][j] = shared[i][j] · Σ_k cols[t][i][k] · rows[t][k][j], by loops over flat arrays.</summary>
    static double[][] TaskPrompt(float[] shared, float[] cols, float[] rows, int t, int r)
    {
        var p = new double[N][];
        for (int i = 0; i < N; i++)
        {
            p[i] = new double[D];
            for (int j = 0; j < D; j++)
            {
                double m = 0;
                for (int k = 0; k < r; k++) m += (double)cols[(t * N + i) * r + k] * rows[(t * r + k) * D + j];
                p[i][j] = shared[i * D + j] * m;
            }
        }
        return p;
    }

    static float[,] BatchRow(Tensor logits3d, int b) => ToArray(logits3d[b].to_type(ScalarType.Float32).cpu());

    [Fact]
    public void EachExampleGetsItsTasksPromptAsAPlainLoop()
    {
        var (model, naive) = Load();
        using var _ = model;
        const int tasks = 3, r = 2;
        var mpt = MultitaskPromptModel.Create(model, new MultitaskPromptTuningConfig { NumVirtualTokens = N, NumTasks = tasks, NumRanks = r }, seed: 5);
        var module = mpt.TaskModule("default");
        Assert.Equal([tasks, N, r], module.PrefixTaskCols.shape);
        Assert.Equal([tasks, r, D], module.PrefixTaskRows.shape);
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).Order().ToList();
        Assert.Equal(["prompt_encoder.default.embedding.weight", "prompt_encoder.default.prefix_task_cols", "prompt_encoder.default.prefix_task_rows"], trainable);
        // Task matrices start N(0, 0.02²) (PEFT's torch.normal(0, 0.02)): their spread is near 0.02.
        var colValues = Values(module.PrefixTaskCols).Concat(Values(module.PrefixTaskRows)).ToArray();
        double sd = Math.Sqrt(colValues.Select(v => (double)v * v).Average());
        Assert.InRange(sd, 0.012, 0.03);
        // Make the task matrices large enough to change the logits visibly.
        using (no_grad()) { module.PrefixTaskCols.mul_(30); module.PrefixTaskRows.mul_(30); }
        var shared = Values(module.EmbeddingWeight);
        var cols = Values(module.PrefixTaskCols);
        var rows = Values(module.PrefixTaskRows);

        var a = RandomIds(7, Gpt2.VocabSize, seed: 6);
        var b = RandomIds(7, Gpt2.VocabSize, seed: 7);
        using var scope = NewDisposeScope();
        using var ids = tensor(a.Concat(b).Select(i => (long)i).ToArray(), [2, 7]);
        using var taskIds = tensor(new long[] { 2, 0 });
        Tensor logits;
        using (no_grad())
        using (model.Extensions.UseTaskIds(taskIds))
            logits = model.Forward(ids);
        var expectedA = naive(new NaiveHooks { VirtualTokens = TaskPrompt(shared, cols, rows, 2, r) })(a);
        var expectedB = naive(new NaiveHooks { VirtualTokens = TaskPrompt(shared, cols, rows, 0, r) })(b);
        Assert.True(MaxAbsDiff(expectedA, BatchRow(logits, 0)) < 1e-4);
        Assert.True(MaxAbsDiff(expectedB, BatchRow(logits, 1)) < 1e-4);
        // Another task gives other logits; TaskPromptOf is the same formula.
        var other = naive(new NaiveHooks { VirtualTokens = TaskPrompt(shared, cols, rows, 1, r) })(a);
        Assert.True(MaxAbsDiff(other, expectedA) > 1e-3);
        var p1 = Values(mpt.TaskPromptOf("default", 1));
        var e1 = TaskPrompt(shared, cols, rows, 1, r).SelectMany(x => x).ToArray();
        Assert.True(p1.Zip(e1).Max(q => Math.Abs(q.First - q.Second)) < 1e-6);
    }

    static string PeftConfigJson(int tasks, int ranks, string init = "RANDOM") => $$"""
        {
          "auto_mapping": null,
          "base_model_name_or_path": "tiny-gpt2",
          "inference_mode": true,
          "num_attention_heads": 3,
          "num_layers": 2,
          "num_ranks": {{ranks}},
          "num_tasks": {{tasks}},
          "num_transformer_submodules": 1,
          "num_virtual_tokens": {{N}},
          "peft_type": "MULTITASK_PROMPT_TUNING",
          "prompt_tuning_init": "{{init}}",
          "prompt_tuning_init_state_dict_path": null,
          "prompt_tuning_init_task": 0,
          "prompt_tuning_init_text": null,
          "revision": null,
          "task_type": "CAUSAL_LM",
          "token_dim": {{D}},
          "tokenizer_kwargs": null,
          "tokenizer_name_or_path": null
        }
        """;

    static float[] Seq(int count, int seed, double scale)
    {
        var rnd = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)((rnd.NextDouble() * 2 - 1) * scale)).ToArray();
    }

    static (float[] Shared, float[] Cols, float[] Rows) WriteFolder(string dir, int tasks, int r, int seed)
    {
        Directory.CreateDirectory(dir);
        var shared = Seq(N * D, seed, 1);
        var cols = Seq(tasks * N * r, seed + 1, 1.5);
        var rows = Seq(tasks * r * D, seed + 2, 1.5);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), PeftConfigJson(tasks, r));
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"),
        [
            new NaiveTensor("prefix_task_cols", NaiveDType.F32, [tasks, N, r], cols),
            new NaiveTensor("prefix_task_rows", NaiveDType.F32, [tasks, r, D], rows),
            new NaiveTensor("prompt_embeddings", NaiveDType.F32, [N, D], shared),
        ]);
        return (shared, cols, rows);
    }

    [Fact]
    public void PeftFolderWrittenByHandLoadsRunsAndSavesTheSameKeys()
    {
        var (model, naive) = Load();
        using var _ = model;
        using var dir = new TempDir();
        string src = Path.Combine(dir.Path, "mpt");
        var (shared, cols, rows) = WriteFolder(src, tasks: 2, r: 3, seed: 11);
        var peft = PeftModel.Load(model, [src], ["default"]);
        var ids = RandomIds(6, Gpt2.VocabSize, seed: 12);
        using (var t = tensor(new long[] { 1 }))
        using (model.Extensions.UseTaskIds(t))
        {
            var expected = naive(new NaiveHooks { VirtualTokens = TaskPrompt(shared, cols, rows, 1, 3) })(ids);
            Assert.True(MaxAbsDiff(expected, Logits(model, ids)) < 1e-4);
        }
        // Saved again: the same three unprefixed tensors and config fields as PEFT writes.
        string outDir = Path.Combine(dir.Path, "saved");
        peft.Save(outDir, "default");
        var saved = NaiveSafetensors.Read(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal(["prefix_task_cols", "prefix_task_rows", "prompt_embeddings"], saved.Keys.Order().ToArray());
        Assert.Equal(cols, saved["prefix_task_cols"].Values);
        Assert.Equal(rows, saved["prefix_task_rows"].Values);
        Assert.Equal(shared, saved["prompt_embeddings"].Values);
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")))!;
        Assert.Equal("MULTITASK_PROMPT_TUNING", (string?)json["peft_type"]);
        Assert.Equal(2, (int?)json["num_tasks"]);
        Assert.Equal(3, (int?)json["num_ranks"]);
        Assert.True((bool?)json["inference_mode"]);
    }

    [Theory]
    [InlineData("AVERAGE_SOURCE_TASKS")]
    [InlineData("EXACT_SOURCE_TASK")]
    [InlineData("ONLY_SOURCE_SHARED")]
    public void SourceInitsCopyTheSharedPromptAndTheMeanOrOneTask(string init)
    {
        var (model, _) = Load();
        using var __ = model;
        using var dir = new TempDir();
        string src = Path.Combine(dir.Path, "source");
        const int tasks = 3, r = 2;
        var (shared, cols, rows) = WriteFolder(src, tasks, r, seed: 21);
        var mpt = MultitaskPromptModel.Create(model, new MultitaskPromptTuningConfig
        {
            NumVirtualTokens = N, NumTasks = 1, NumRanks = r, PromptTuningInitMode = init,
            PromptTuningInitStateDictPath = Path.Combine(src, "adapter_model.safetensors"), PromptTuningInitTask = 2,
        }, seed: 3);
        var m = mpt.TaskModule("default");
        Assert.Equal(shared, Values(m.EmbeddingWeight));
        var gotCols = Values(m.PrefixTaskCols);
        var gotRows = Values(m.PrefixTaskRows);
        double[] wantCols = new double[N * r], wantRows = new double[r * D];
        for (int i = 0; i < N * r; i++)
            wantCols[i] = init == "AVERAGE_SOURCE_TASKS" ? Enumerable.Range(0, tasks).Average(t => (double)cols[t * N * r + i]) : cols[2 * N * r + i];
        for (int i = 0; i < r * D; i++)
            wantRows[i] = init == "AVERAGE_SOURCE_TASKS" ? Enumerable.Range(0, tasks).Average(t => (double)rows[t * r * D + i]) : rows[2 * r * D + i];
        double dc = gotCols.Zip(wantCols).Max(p => Math.Abs(p.First - p.Second));
        double dr = gotRows.Zip(wantRows).Max(p => Math.Abs(p.First - p.Second));
        if (init == "ONLY_SOURCE_SHARED") Assert.True(dc > 0.1 && dr > 0.1); // its own N(0, 0.02²) matrices
        else Assert.True(dc < 1e-6 && dr < 1e-6);
    }

    [Fact]
    public void BadInputIsAOneLineError()
    {
        var (model, _) = Load();
        using var __ = model;
        using var dir = new TempDir();
        var mpt = MultitaskPromptModel.Create(model, new MultitaskPromptTuningConfig { NumVirtualTokens = N, NumTasks = 2 }, seed: 1);
        var ids = RandomIds(5, Gpt2.VocabSize, seed: 2);
        // No task ids.
        var e = Assert.Throws<PeftSharpException>(() => Logits(model, ids));
        Assert.Contains("needs a task id per example", e.Message);
        // Out of range.
        using (var t = tensor(new long[] { 2 }))
        using (model.Extensions.UseTaskIds(t))
        {
            e = Assert.Throws<PeftSharpException>(() => Logits(model, ids));
            Assert.Contains("task id 2 is out of range; this adapter has num_tasks 2", e.Message);
        }
        // Config: num_tasks 0, a source init without its state dict.
        e = Assert.Throws<PeftSharpException>(() => MultitaskPromptTuningConfig.FromJson(PeftConfigJson(0, 1)));
        Assert.Contains("num_tasks", e.Message);
        e = Assert.Throws<PeftSharpException>(() => MultitaskPromptTuningConfig.FromJson(PeftConfigJson(1, 1, "EXACT_SOURCE_TASK")));
        Assert.Contains("prompt_tuning_init_state_dict_path", e.Message);
        e = Assert.Throws<PeftSharpException>(() => MultitaskPromptTuningConfig.FromJson(PeftConfigJson(1, 1, "SAMPLE_VOCAB")));
        Assert.Contains("prompt_tuning_init", e.Message);
        // A folder whose tensors do not fit its config.
        string bad = Path.Combine(dir.Path, "bad");
        WriteFolder(bad, tasks: 2, r: 2, seed: 3);
        File.WriteAllText(Path.Combine(bad, "adapter_config.json"), PeftConfigJson(3, 2));
        var fresh = MultitaskPromptModel.Attach(model);
        e = Assert.Throws<PeftSharpException>(() => fresh.LoadAdapter(bad, "bad"));
        Assert.Contains("prefix_task_cols", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        // A source init needing num_tasks 1.
        e = Assert.Throws<PeftSharpException>(() => mpt.AddAdapter("x", new MultitaskPromptTuningConfig
        {
            NumVirtualTokens = N, NumTasks = 2, NumRanks = 2, PromptTuningInitMode = "AVERAGE_SOURCE_TASKS",
            PromptTuningInitStateDictPath = Path.Combine(bad, "adapter_model.safetensors"),
        }));
        Assert.Contains("num_tasks 1", e.Message);
    }

    [Fact]
    public void TrainingReadsTaskIdsFromTheBatchAndMovesOnlyThatTasksMatrices()
    {
        var (model, _) = Load();
        using var __ = model;
        var mpt = MultitaskPromptModel.Create(model, new MultitaskPromptTuningConfig { NumVirtualTokens = N, NumTasks = 3, NumRanks = 1 }, seed: 9);
        var module = mpt.TaskModule("default");
        var cols0 = Values(module.PrefixTaskCols);
        var ids = RandomIds(6, Gpt2.VocabSize, seed: 10);
        var examples = new List<TrainingExample> { new(ids, ids) { TaskId = 1 } };
        using (var trainer = new Trainer(model, [new ParameterGroup(ParameterGroups.Trainable(model), 1e-2, 0)],
                   new TrainingOptions { MaxSteps = 1, BatchSize = 1, Schedule = ScheduleKind.Constant, LoggingSteps = 1 }, examples))
            trainer.Train(CancellationToken.None);
        var cols1 = Values(module.PrefixTaskCols);
        double Moved(int t) => Enumerable.Range(t * N, N).Max(i => Math.Abs(cols1[i] - cols0[i]));
        Assert.True(Moved(1) > 1e-4);
        Assert.Equal(0, Moved(0));
        Assert.Equal(0, Moved(2));
        // A batch mixing examples with and without task ids is refused.
        var mixed = new List<TrainingExample> { new(ids, ids) { TaskId = 0 }, new(ids, ids) };
        var e = Assert.Throws<PeftSharpException>(() => Batch.Collate(mixed, 0));
        Assert.Contains("task_id", e.Message);
    }
}
