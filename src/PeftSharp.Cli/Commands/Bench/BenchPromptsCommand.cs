using System.CommandLine;
using PeftSharp.Cli.Commands.Bench.Tuners;
using PeftSharp.Models;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Prompts;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench prompts</c>: the soft-prompt methods measured in one run.
/// <list type="bullet">
/// <item>latency: per-token decode at batch 1 after a prompt, with a prefix-tuning adapter and a prompt-tuning adapter
/// of <c>--virtual-tokens</c> positions, as ratios to the base model measured interleaved (the prefix lives in the KV
/// cache, so a decode step only attends over a few more positions);</item>
/// <item>quality: held-out perplexity of prompt tuning, P-tuning and prefix tuning next to LoRA on the demo's two tasks,
/// with each method's trainable-parameter count and training speed (<see cref="PromptQuality"/>), a table and a plot.</item>
/// </list>
/// </summary>
public static class BenchPromptsCommand
{
    /// <summary>The <c>bench prompts</c> command.</summary>
    public static Command Create()
    {
        var parts = new Option<string>("--parts") { Description = "comma-separated: latency, quality", DefaultValueFactory = _ => "latency,quality" };
        var config = new Option<string>("--config") { Description = "config.json of the model for latency (random weights)", DefaultValueFactory = _ => Path.Combine("bench", "configs", "gpt2-124m.json") };
        var demoBase = new Option<string>("--demo-base") { Description = "the demo's trained base model folder (quality)", DefaultValueFactory = _ => Path.Combine(".cache", "demo", "base-full-v1") };
        var dtype = CliOptions.DType();
        var virtualTokens = new Option<int>("--virtual-tokens") { Description = "latency: num_virtual_tokens of the prefix and prompt adapters", DefaultValueFactory = _ => 20 }.AtLeast(1);
        var promptLen = new Option<int>("--prompt-len") { DefaultValueFactory = _ => 128 }.AtLeast(1);
        var newTokens = new Option<int>("--new-tokens") { Description = "decoded tokens per repeat", DefaultValueFactory = _ => 32 }.AtLeast(1);
        var repeats = new Option<int>("--repeats") { Description = "interleaved latency repeats (after one warm-up)", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var qualitySteps = new Option<int>("--quality-steps") { DefaultValueFactory = _ => 60 }.AtLeast(1);
        var methods = new Option<string?>("--methods") { Description = "quality: comma-separated method names of the table (default: all)" };
        var outDir = new Option<string>("--out") { DefaultValueFactory = _ => Path.Combine("runs", "bench-prompts") };
        var json = CliOptions.Json();
        var command = new Command("prompts", "prompt tuning, P-tuning, prefix tuning: decode latency with a prefix, held-out perplexity next to LoRA")
            { parts, config, demoBase, dtype, virtualTokens, promptLen, newTokens, repeats, qualitySteps, methods, outDir, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var chosen = parse.GetValue(parts)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToHashSet();
            foreach (var p in chosen)
                if (p is not ("latency" or "quality")) throw new PeftSharpException($"--parts: unknown part \"{p}\" (expected latency, quality)");
            HashSet<string>? only = null;
            if (parse.GetValue(methods) is { } list)
            {
                only = list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToHashSet();
                foreach (var m in only.Where(m => PromptQuality.Methods.All(x => x.Name != m)))
                    throw new PeftSharpException($"--methods: unknown method \"{m}\" (expected {string.Join(", ", PromptQuality.Methods.Select(x => x.Name))})");
            }
            string dir = parse.GetValue(outDir)!;
            Directory.CreateDirectory(dir);
            var result = new Dictionary<string, object?>();
            if (chosen.Contains("latency"))
                result["latency"] = Latency(parse.GetValue(config)!, CliOptions.ParseDType(parse.GetValue(dtype)!), parse.GetValue(virtualTokens),
                    parse.GetValue(promptLen), parse.GetValue(newTokens), parse.GetValue(repeats));
            if (chosen.Contains("quality")) result["quality"] = PromptQuality.Run(parse.GetValue(demoBase)!, parse.GetValue(qualitySteps), dir, only);
            result["threads"] = get_num_threads();
            if (parse.GetValue(json)) JsonOutput.Write(result);
            return 0;
        }));
        return command;
    }

    static object Latency(string configPath, ScalarType dtype, int virtualTokens, int promptLen, int newTokens, int repeats)
    {
        var config = ModelConfig.Load(configPath);
        if (virtualTokens + promptLen + newTokens > config.ContextLength)
            throw new PeftSharpException($"--virtual-tokens + --prompt-len + --new-tokens ({virtualTokens + promptLen + newTokens}) exceeds the model's context ({config.ContextLength})");
        using var model = ModelLoader.Create(config, dtype);
        model.InitializeWeights(0);
        model.eval();
        var peft = new PeftModel(model);
        peft.AddAdapter("prefix", new PrefixTuningConfig { NumVirtualTokens = virtualTokens }, seed: 1, trainable: false);
        peft.AddAdapter("prompt", new PromptTuningConfig { NumVirtualTokens = virtualTokens }, seed: 2, trainable: false);
        string[] variants = ["base", "prefix", "prompt"];
        Console.Error.WriteLine($"bench prompts latency: {config.ModelType}, {ModelLoader.DTypeName(dtype)}, batch 1, prompt {promptLen}, {newTokens} new tokens, " +
                                $"{virtualTokens} virtual tokens, {get_num_threads()} threads");
        var decode = variants.ToDictionary(v => v, _ => new List<double>());
        var prefill = variants.ToDictionary(v => v, _ => new List<double>());
        using var _ = no_grad();
        var prompt = randint(0, config.VocabSize, [1, promptLen], dtype: ScalarType.Int64);
        for (int rep = 0; rep <= repeats; rep++) // rep 0 warms up
            foreach (var v in variants)
            {
                if (v == "base") peft.SetAdapter();
                else peft.SetAdapter(v);
                var (p, d) = BenchInferCommand.Measure(model, prompt, newTokens);
                if (rep == 0) continue;
                prefill[v].Add(p);
                decode[v].Add(d);
                Console.Error.WriteLine($"  {v,-7} prefill {p * 1e3,8:F1} ms  decode {d * 1e3,8:F2} ms/token");
            }
        var median = decode.ToDictionary(kv => kv.Key, kv => BenchCommand.Median(kv.Value));
        var medianPrefill = prefill.ToDictionary(kv => kv.Key, kv => BenchCommand.Median(kv.Value));
        double b = median["base"];
        Console.WriteLine("decode ms/token at batch 1: " + string.Join(", ", median.Select(kv => $"{kv.Key} {kv.Value * 1e3:F2} ({kv.Value / b:F3}x)")));
        return new
        {
            dtype = ModelLoader.DTypeName(dtype),
            virtual_tokens = virtualTokens,
            prompt_len = promptLen,
            new_tokens = newTokens,
            decode_ms_per_token = median.ToDictionary(kv => kv.Key, kv => kv.Value * 1e3),
            decode_ratio_to_base = median.ToDictionary(kv => kv.Key, kv => kv.Value / b),
            prefill_ratio_to_base = medianPrefill.ToDictionary(kv => kv.Key, kv => kv.Value / medianPrefill["base"]),
        };
    }
}
