using PeftSharp.IO;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using PeftSharp.Tensors;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>trainer_state.json: everything besides tensors that a resumed run needs, plus a little for people.</summary>
public sealed record TrainerState
{
    /// <summary><c>format</c>: always <c>peftsharp-trainer-state</c>.</summary>
    [JsonPropertyName("format")] public string Format { get; init; } = "peftsharp-trainer-state";
    /// <summary><c>global_step</c>: optimizer steps completed.</summary>
    [JsonPropertyName("global_step")] public long GlobalStep { get; init; }
    /// <summary><c>total_steps</c>: optimizer steps the run makes.</summary>
    [JsonPropertyName("total_steps")] public long TotalSteps { get; init; }
    /// <summary><c>epoch</c>: epochs completed, fractional.</summary>
    [JsonPropertyName("epoch")] public double Epoch { get; init; }
    /// <summary><c>tokens_seen</c>: real tokens trained on so far.</summary>
    [JsonPropertyName("tokens_seen")] public long TokensSeen { get; init; }
    /// <summary><c>seed</c>: the run's seed.</summary>
    [JsonPropertyName("seed")] public ulong Seed { get; init; }
    /// <summary><c>data</c>: the data loader's position.</summary>
    [JsonPropertyName("data")] public required DataState Data { get; init; }
    /// <summary><c>scheduler</c>: the learning-rate schedule.</summary>
    [JsonPropertyName("scheduler")] public required SchedulerState Scheduler { get; init; }
    /// <summary><c>last_loss</c>: the last logged training loss.</summary>
    [JsonPropertyName("last_loss")] public double? LastLoss { get; init; }
    /// <summary><c>last_eval_loss</c>: the last evaluation loss.</summary>
    [JsonPropertyName("last_eval_loss")] public double? LastEvalLoss { get; init; }
}

/// <summary>The data loader's position and what it was built from (checked on resume).</summary>
public sealed record DataState(
    [property: JsonPropertyName("epoch")] long Epoch,
    [property: JsonPropertyName("batch")] int Batch,
    [property: JsonPropertyName("seed")] ulong Seed,
    [property: JsonPropertyName("examples")] int Examples,
    [property: JsonPropertyName("batch_size")] int BatchSize,
    [property: JsonPropertyName("shuffle")] bool Shuffle);

/// <summary>The schedule is a function of the step: its state is the step count and the shape it was made with.</summary>
public sealed record SchedulerState(
    [property: JsonPropertyName("kind")] string Kind,
    [property: JsonPropertyName("warmup_steps")] long WarmupSteps,
    [property: JsonPropertyName("total_steps")] long TotalSteps,
    [property: JsonPropertyName("last_step")] long LastStep);

/// <summary>
/// The layout of a checkpoint folder <c>checkpoint-&lt;step&gt;/</c>:
/// <list type="bullet">
/// <item><c>trainable.safetensors</c>: the trained parameters by name, in their own dtype;</item>
/// <item><c>optimizer.safetensors</c>: AdamW's moments, float32 masters and step counts (<see cref="AdamWOptimizer.StateTensors"/>);</item>
/// <item><c>rng_state.safetensors</c>: torch's default CPU generator state (<c>torch</c>, uint8);</item>
/// <item><c>trainer_state.json</c>: step, data position, schedule, seed (<see cref="TrainerState"/>);</item>
/// <item>whatever the caller's checkpoint callback writes (a PEFT adapter, for instance).</item>
/// </list>
/// Folders are written atomically (<see cref="AtomicDirectory"/>) and only the newest few are kept.
/// </summary>
public static class Checkpoint
{
    /// <summary>Folder name prefix of a checkpoint (<c>checkpoint-N</c>, as transformers' Trainer).</summary>
    public const string Prefix = "checkpoint-";
    /// <summary>Trainable parameters, by name.</summary>
    public const string TrainableFile = "trainable.safetensors";
    /// <summary>AdamW moments and step counts.</summary>
    public const string OptimizerFile = "optimizer.safetensors";
    /// <summary>torch's generator state.</summary>
    public const string RngFile = "rng_state.safetensors";
    /// <summary>The <see cref="TrainerState"/> as JSON.</summary>
    public const string StateFile = "trainer_state.json";

    static readonly Regex Name = new(@"^checkpoint-(\d+)$", RegexOptions.CultureInvariant);
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary><c>checkpoint-</c> followed by <paramref name="step"/>.</summary>
    public static string FolderName(long step) => Prefix + step.ToString(CultureInfo.InvariantCulture);

    /// <summary>The complete checkpoints in <paramref name="outputDir"/>, oldest first (unfinished temporary folders are ignored).</summary>
    public static IReadOnlyList<(long Step, string Path)> List(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return [];
        return Directory.EnumerateDirectories(outputDir, Prefix + "*")
            .Select(dir => (Match: Name.Match(Path.GetFileName(dir)), dir))
            .Where(x => x.Match.Success && File.Exists(Path.Combine(x.dir, StateFile)))
            .Select(x => (long.Parse(x.Match.Groups[1].Value, CultureInfo.InvariantCulture), x.dir))
            .OrderBy(x => x.Item1)
            .ToList();
    }

    /// <summary>The newest complete checkpoint in <paramref name="outputDir"/>, or null.</summary>
    public static string? Latest(string outputDir) => List(outputDir).LastOrDefault().Path;

    /// <summary>Deletes all but the newest <paramref name="keep"/> checkpoints (none when keep ≤ 0).</summary>
    public static void Prune(string outputDir, int keep)
    {
        if (keep <= 0) return;
        var all = List(outputDir);
        foreach (var (_, path) in all.Take(Math.Max(0, all.Count - keep))) Directory.Delete(path, recursive: true);
    }

    /// <summary>Writes the trainable parameters' values to <paramref name="path"/> (safetensors).</summary>
    public static void SaveTrainable(string path, IReadOnlyList<(string Name, Parameter Param)> parameters) =>
        SafetensorsWriter.Save(path, parameters.Select(p => new KeyValuePair<string, Tensor>(p.Name, p.Param)),
            new Dictionary<string, string> { ["format"] = "peftsharp-trainable" });

    /// <summary>Copies every parameter's values from <paramref name="path"/> (names and shapes must match).</summary>
    /// <exception cref="PeftSharpException">A parameter is missing from the file or has another shape (ReadInto checks shapes).</exception>
    public static void LoadTrainable(string path, IReadOnlyList<(string Name, Parameter Param)> parameters)
    {
        using var file = SafetensorsFile.Open(path);
        foreach (var (name, p) in parameters)
        {
            if (!file.Tensors.ContainsKey(name))
                throw new PeftSharpException($"{path}: missing tensor '{name}' (the checkpoint was made with other trainable parameters)");
            file.ReadInto(name, p);
        }
    }

    /// <summary>Saves torch's default generator state.</summary>
    public static void SaveRng(string path)
    {
        using var state = random.get_rng_state();
        SafetensorsWriter.Save(path, [new KeyValuePair<string, Tensor>("torch", state)]);
    }

    /// <summary>Restores torch's default generator from <paramref name="path"/>.</summary>
    /// <exception cref="PeftSharpException">The file lacks the generator state.</exception>
    public static void LoadRng(string path)
    {
        using var file = SafetensorsFile.Open(path);
        if (!file.Tensors.ContainsKey("torch")) throw new PeftSharpException($"{path}: missing tensor 'torch' (torch's generator state)");
        using var state = file.Read("torch");
        random.set_rng_state(state);
    }

    /// <summary>Writes <paramref name="state"/> as JSON to <paramref name="path"/>, atomically.</summary>
    public static void SaveState(string path, TrainerState state) =>
        AtomicFile.Write(path, stream => JsonSerializer.Serialize(stream, state, Json));

    /// <exception cref="PeftSharpException">The file is missing or not a trainer state.</exception>
    public static TrainerState LoadState(string checkpointDir)
    {
        string path = Path.Combine(checkpointDir, StateFile);
        if (!File.Exists(path)) throw new PeftSharpException($"{checkpointDir}: not a PeftSharp checkpoint (no {StateFile})");
        try
        {
            using var stream = File.OpenRead(path);
            var state = JsonSerializer.Deserialize<TrainerState>(stream, Json);
            if (state is null || state.Format != "peftsharp-trainer-state") throw new JsonException("not a peftsharp-trainer-state object");
            return state;
        }
        catch (JsonException e)
        {
            throw new PeftSharpException($"{path}: expected PeftSharp's trainer state JSON ({e.Message.Split('\n')[0]})");
        }
    }
}
