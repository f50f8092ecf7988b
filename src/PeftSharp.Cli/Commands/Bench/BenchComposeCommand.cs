using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PeftSharp.Cli.Commands.Bench.Compose;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench compose</c>: cross-task composition measured in one run.
/// <list type="bullet">
/// <item>combine: seconds to combine two r=16 LoRA adapters (q, k, v, o, gate, up, down of every layer) with each of
/// PEFT's combination types, on Llama-7B's shape (32 layers, 4096 hidden, 11008 intermediate) scaled down in width
/// by <c>--widths</c> (the layer count stays 32);</item>
/// <item>tasks: the demo's base and three synthetic tasks; held-out NLL on every task of each single adapter, each
/// combination type, LoraHub and AdapterFusion (<see cref="CompositionTable"/>).</item>
/// </list>
/// </summary>
public static class BenchComposeCommand
{
    /// <summary>The <c>bench compose</c> command.</summary>
    public static Command Create()
    {
        var parts = new Option<string>("--parts") { Description = "comma-separated: combine, tasks", DefaultValueFactory = _ => "combine,tasks" };
        var widths = new Option<string>("--widths") { Description = "combine: fractions of Llama-7B's width to measure at", DefaultValueFactory = _ => "0.125,0.25" };
        var types = new Option<string?>("--types") { Description = "combine: comma-separated combination types (default: all)" };
        var demoBase = new Option<string>("--demo-base") { Description = "tasks: the demo's trained base model folder", DefaultValueFactory = _ => Path.Combine(".cache", "demo", "base-full-v1") };
        var steps = new Option<int>("--steps") { Description = "tasks: training steps of each adapter", DefaultValueFactory = _ => 80 }.AtLeast(1);
        var outDir = new Option<string>("--out") { DefaultValueFactory = _ => Path.Combine("runs", "bench-compose") };
        var json = CliOptions.Json();
        var command = new Command("compose", "combine speed on a 7B-shaped config; held-out NLL of single, combined, LoraHub and fused adapters on the demo's tasks")
            { parts, widths, types, demoBase, steps, outDir, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var chosen = parse.GetValue(parts)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToHashSet();
            foreach (var p in chosen)
                if (p is not ("combine" or "tasks")) throw new PeftSharpException($"--parts: unknown part \"{p}\" (expected combine, tasks)");
            var fractions = parse.GetValue(widths)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(w => double.TryParse(w, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) && f > 0 && f <= 1 && 4096 * f % 32 == 0 && 11008 * f % 1 == 0
                    ? f : throw new PeftSharpException($"--widths: \"{w}\" is not a fraction in (0, 1] that keeps 32 heads and whole widths (e.g. 0.125, 0.25, 0.5)"))
                .ToArray();
            var combinationTypes = parse.GetValue(types) is { } t
                ? t.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                    .Select(x => WeightedAdapters.CombinationTypes.Contains(x) ? x : throw new PeftSharpException($"--types: unknown combination type \"{x}\" (expected {string.Join(", ", WeightedAdapters.CombinationTypes)})")).ToArray()
                : WeightedAdapters.CombinationTypes.ToArray();
            string dir = parse.GetValue(outDir)!;
            Directory.CreateDirectory(dir);
            var result = new Dictionary<string, object?>();
            if (chosen.Contains("combine")) result["combine"] = Combine(fractions, combinationTypes);
            if (chosen.Contains("tasks")) result["tasks"] = CompositionTable.Run(parse.GetValue(demoBase)!, parse.GetValue(steps), dir);
            result["threads"] = get_num_threads();
            if (parse.GetValue(json)) JsonOutput.Write(result);
            return 0;
        }));
        return command;
    }

    const int Rank = 16;

    static object Combine(double[] fractions, string[] types)
    {
        var perWidth = new Dictionary<string, object>();
        foreach (double f in fractions)
        {
            int hidden = (int)(4096 * f), intermediate = (int)(11008 * f);
            var config = ModelConfig.FromJson($$"""
                {"model_type":"llama","vocab_size":256,"hidden_size":{{hidden}},"intermediate_size":{{intermediate}},"num_hidden_layers":32,
                 "num_attention_heads":32,"num_key_value_heads":32,"max_position_embeddings":256}
                """);
            using var model = ModelLoader.Create(config, ScalarType.BFloat16);
            var targets = TargetModules.FromNames("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj");
            var lora = LoraModel.Create(model, new LoraConfig { R = Rank, LoraAlpha = 2 * Rank, TargetModules = targets, InitLoraWeights = InitLoraWeights.False }, "a", seed: 1);
            lora.AddAdapter("b", new LoraConfig { R = Rank, LoraAlpha = 2 * Rank, TargetModules = targets, InitLoraWeights = InitLoraWeights.False }, seed: 2, trainable: false);
            Console.Error.WriteLine($"bench compose combine: Llama-7B shape at width {f} (hidden {hidden}, intermediate {intermediate}, 32 layers), two r={Rank} adapters on 7 projections, {get_num_threads()} threads");
            var seconds = new Dictionary<string, double>();
            foreach (var type in types)
            {
                var clock = Stopwatch.StartNew();
                lora.AddWeightedAdapter(["a", "b"], [0.7, 0.5], "c", type, svdRank: Rank, density: 0.5, seed: 3);
                seconds[type] = clock.Elapsed.TotalSeconds;
                lora.DeleteAdapter("c");
                Console.Error.WriteLine($"  {type,-20} {seconds[type],8:F2} s");
            }
            Console.WriteLine($"width {f} (hidden {hidden}): " + string.Join(", ", seconds.Select(kv => $"{kv.Key} {kv.Value:F2} s")));
            perWidth[f.ToString(CultureInfo.InvariantCulture)] = new { hidden, intermediate, layers = 32, rank = Rank, seconds };
        }
        return perWidth;
    }
}
